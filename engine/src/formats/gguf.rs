//! GGUF, llama.cpp's model file format (versions 2 and 3): header, metadata, tensor infos,
//! and zero-copy access to the tensor data.
//!
//! # Layout
//!
//! Checked against the spec (`docs/gguf.md` in <https://github.com/ggml-org/ggml>) and the
//! reader in llama.cpp's `ggml/src/gguf.cpp`. Everything is little-endian:
//!
//! 1. magic `GGUF`, u32 version, u64 tensor count, u64 metadata count;
//! 2. metadata entries: a string key, a u32 [`ValueType`], the value;
//! 3. tensor infos: a string name, u32 `n_dims` (at most 4), `n_dims` u64 sizes `ne`, a u32
//!    [`GgmlType`] id, a u64 offset into the data section;
//! 4. padding up to the alignment (`general.alignment`, a u32 power of two, default 32), then
//!    the data section; every tensor offset is a multiple of the alignment.
//!
//! A string is a u64 byte length and that many bytes of UTF-8, not terminated. An array is a
//! u32 element type, a u64 count and the elements; arrays may nest. Version 1, which used u32
//! counts and lengths, is rejected.
//!
//! # Split files
//!
//! llama.cpp's `gguf-split` cuts a model into `NAME-00001-of-0000N.gguf` and its siblings:
//! each part is a GGUF file with `split.no` (from 0), `split.count` and, in the first, every
//! metadata key and `split.tensors.count`. A tensor's offset is into its own part's data
//! section. [`GgufFile::open`] given the first part opens them all, and
//! [`GgufHeader::join`] makes one header of the parts', each tensor knowing its part.
//!
//! # Dimension order
//!
//! [`TensorInfo::dims`] is GGML's `ne`: `dims[0]` varies fastest. A 2-D weight is stored as
//! `dims[1]` rows of `dims[0]` elements, so `dims[0]` is the input dimension K and `dims[1]`
//! the output features: the transpose of how PyTorch prints the shape (`[out, in]`), and the
//! same `[rows, cols]` row-major order the rest of glim uses. [`GgufFile::tensor_f32`] returns
//! the elements in exactly that storage order.
//!
//! # Hostile files
//!
//! Parsing never trusts the file. Every count, length, size and offset is checked against the
//! bytes actually left before anything is allocated or sliced, so a lying header costs at most
//! a small multiple of the file's own size (in practice: an error after reading a few bytes);
//! arithmetic is checked; arrays may nest only [`MAX_ARRAY_DEPTH`] deep, so the recursion is
//! bounded. Every problem comes back as `Error::Invalid` (or `Error::Unsupported` for a tensor
//! type glim does not know) with one line saying what is wrong and where.

use std::collections::HashMap;
use std::fmt;

use super::ggml::{self, GgmlType};
use crate::error::{Error, Result};

/// Metadata keys of split files.
pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS: &str = "split.tensors.count";

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when the file has no `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// How deep arrays may nest inside arrays (real files use one level).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest encoding of a metadata entry: empty key (8), type (4), a one-byte value.
const MIN_KV_BYTES: usize = 13;
/// Smallest encoding of a tensor info: empty name (8), `n_dims` (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 24;
/// Vectors of strings or arrays start at most this big and grow as elements actually parse,
/// so a file full of tiny elements cannot make glim reserve several times its size up front.
const PREALLOC_LIMIT: usize = 1 << 16;

/// Type tag of a metadata value, with GGUF's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type with GGUF id `id`, if there is one.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// GGUF's numeric id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// Fewest bytes one value of this type takes in the file.
    fn min_bytes(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array, stored unboxed by element type (a 49k-token vocabulary is one
/// `Vec<String>`, its scores one `Vec<f32>`).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The type in words, e.g. `u32` or `array of string`.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => a.type_name(),
            other => other.value_type().name().to_string(),
        }
    }

    /// Any integer value that is non-negative, widened; `None` for other types.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits in an i64; `None` for other types.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    /// An f32 or f64 value, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F32(_) => ValueType::F32,
            Array::F64(_) => ValueType::F64,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type in words, e.g. `array of f32`.
    pub fn type_name(&self) -> String {
        format!("array of {}", self.element_type().name())
    }
}

/// Where one tensor lives in a [`GgufFile`] and what it holds. Only a parsed file makes
/// these, so the sizes always agree with the dims and the type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    n_elements: u64,
    start: u64,
    n_bytes: usize,
    /// The part of a split model the tensor is in (0 for a single file).
    part: usize,
}

impl TensorInfo {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// GGML's `ne`: `dims()[0]` is the fastest-varying dimension (K, the input dimension of a
    /// weight). See the module docs.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// Offset of the data from the start of the data section, as stored in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The part of a split model holding the tensor (0 for a single file).
    pub fn part(&self) -> usize {
        self.part
    }

    /// Offset of the data from the start of the file (of its part, for a split model).
    pub fn file_offset(&self) -> u64 {
        self.start
    }

    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Bytes of data.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }

    /// Elements per row: `dims[0]` (1 for a 0-D tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Rows: the product of all dims after the first.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// The bytes a [`GgufFile`] reads from: its own copy, or a read-only memory map of the file,
/// so the weights are never held twice.
enum Storage {
    Owned(Vec<u8>),
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mapped(m) => m,
        }
    }
}

/// A parsed GGUF file (every part of a split model) together with its bytes. Its header's
/// accessors ([`GgufHeader`]) are reached through `Deref`.
pub struct GgufFile {
    /// The bytes of each part: one for a single file.
    storage: Vec<Storage>,
    header: GgufHeader,
}

/// Everything parsed out of a GGUF header: metadata and tensor infos, which refer to the
/// data by offset only. Parsed from the whole file ([`GgufFile`]) or from a prefix of one
/// whose length is known ([`parse_header`], the browser's path: the data then arrives in
/// pieces).
#[derive(Debug)]
pub struct GgufHeader {
    file_len: u64,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("parts", &self.storage.len())
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses the file at `path`, memory-mapping it rather than reading it; the
    /// first part of a split model opens every part.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let (storage, header) = Self::open_part(path)?;
        let Some(count) = header.split_count()? else {
            return Ok(Self {
                storage: vec![storage],
                header,
            });
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let no = header.get_u32(SPLIT_NO)?;
        if no != 0 {
            return Err(Error::Invalid(format!(
                "{} is part {} of {count} of a split model: open the first part (NAME-00001-of-{count:05}.gguf)",
                path.display(),
                no + 1
            )));
        }
        let mut storages = vec![storage];
        let mut headers = vec![header];
        for i in 1..count {
            let sibling = split_part_name(&name, i).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: part 1 of a split model, but not named as one (NAME-00001-of-{count:05}.gguf)",
                    path.display()
                ))
            })?;
            let (storage, header) = Self::open_part(&path.with_file_name(sibling))?;
            storages.push(storage);
            headers.push(header);
        }
        let header = GgufHeader::join(headers)
            .map_err(|e| context(e, format_args!("split GGUF {}", path.display())))?;
        Ok(Self {
            storage: storages,
            header,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn open_part(path: &std::path::Path) -> Result<(Storage, GgufHeader)> {
        let cannot = |e: std::io::Error| {
            Error::Invalid(format!("cannot open GGUF file {}: {e}", path.display()))
        };
        let file = super::files::open_regular(path).map_err(cannot)?;
        // SAFETY: the map is read-only and private to this value. Like every mmap-based model
        // loader (llama.cpp included), glim assumes nobody truncates or rewrites the file
        // while it is open; the parser never trusts the contents either way.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(cannot)?;
        let header =
            parse(&map).map_err(|e| context(e, format_args!("GGUF file {}", path.display())))?;
        Ok((Storage::Mapped(map), header))
    }

    /// Parses a GGUF file held in memory (e.g. fetched by a browser), taking ownership of it.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let header = parse(&bytes).map_err(|e| context(e, "GGUF data"))?;
        Ok(Self {
            storage: vec![Storage::Owned(bytes)],
            header,
        })
    }

    /// Parses the parts of a split model held in memory, in order.
    pub fn from_parts(parts: Vec<Vec<u8>>) -> Result<Self> {
        let headers = parts
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                parse(bytes).map_err(|e| context(e, format_args!("GGUF part {}", i + 1)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            header: GgufHeader::join(headers)?,
            storage: parts.into_iter().map(Storage::Owned).collect(),
        })
    }

    /// The whole file (the first part of a split model).
    pub fn as_bytes(&self) -> &[u8] {
        self.storage[0].bytes()
    }

    /// The raw data of a tensor of this file, in its GGML encoding (empty for an info that
    /// came from another file and does not fit this one).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let Ok(start) = usize::try_from(info.start) else {
            return &[];
        };
        let end = start.saturating_add(info.n_bytes);
        self.storage
            .get(info.part)
            .and_then(|s| s.bytes().get(start..end))
            .unwrap_or(&[])
    }

    /// The tensor `name` decoded to f32 (see [`GgufData::tensor_f32`]).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        GgufData::tensor_f32(self, name)
    }
}

/// A GGUF file's tensor data as far as it is at hand: all of it ([`GgufFile`]), or the
/// tensors that have arrived so far (a file streamed over a network).
pub trait GgufData {
    fn header(&self) -> &GgufHeader;

    /// The raw data of a tensor of this file, in its GGML encoding; an error when its bytes
    /// are not at hand.
    fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]>;

    /// The tensor `name` decoded to f32, in storage order: row-major with `dims[0]` fastest
    /// (see the module docs). `Error::Unsupported` for a type glim cannot decode.
    fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .header()
            .tensor(name)
            .ok_or_else(|| Error::Invalid(format!("GGUF file has no tensor {name:?}")))?;
        let n = usize::try_from(info.n_elements).map_err(|_| {
            Error::Unsupported(format!(
                "tensor {name:?} has {} elements, too many for this platform",
                info.n_elements
            ))
        })?;
        ggml::dequantize(info.ty, self.tensor_data(info)?, n)
            .map_err(|e| context(e, format_args!("tensor {name:?}")))
    }
}

impl GgufData for GgufFile {
    fn header(&self) -> &GgufHeader {
        &self.header
    }

    fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        Ok(self.tensor_bytes(info))
    }
}

impl std::ops::Deref for GgufFile {
    type Target = GgufHeader;

    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}

impl GgufHeader {
    /// The length of the whole file (the first part of a split model), which every tensor
    /// was checked to fit.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// `split.count` when this is a part of a split model (more than one part), checked to
    /// sit with a `split.no` below it.
    pub fn split_count(&self) -> Result<Option<usize>> {
        let count = match self.metadata(SPLIT_COUNT) {
            None => return Ok(None),
            Some(_) => self.get_u32(SPLIT_COUNT)? as usize,
        };
        if count <= 1 {
            return Ok(None);
        }
        let no = self.get_u32(SPLIT_NO)? as usize;
        if no >= count {
            return Err(Error::Invalid(format!(
                "{SPLIT_NO} is {no}, not below {SPLIT_COUNT} {count}"
            )));
        }
        Ok(Some(count))
    }

    /// One header for the parts of a split model, in order: the first part's metadata and
    /// every part's tensors, each knowing its part. Checks that the parts are those of one
    /// model, each in its place.
    pub fn join(parts: Vec<GgufHeader>) -> Result<GgufHeader> {
        let count = parts.len();
        if count == 1 && parts[0].split_count()?.is_none() {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let wanted = parts
            .first()
            .map(GgufHeader::split_count)
            .transpose()?
            .flatten();
        if wanted != Some(count) {
            return Err(Error::Invalid(format!(
                "{count} parts given, and the first says {SPLIT_COUNT} {}",
                wanted.map_or("is missing".into(), |n| n.to_string())
            )));
        }
        for (i, part) in parts.iter().enumerate() {
            let (no, of) = (part.get_u32(SPLIT_NO)? as usize, part.split_count()?);
            if no != i || of != Some(count) {
                return Err(Error::Invalid(format!(
                    "part {} says it is part {} of {}",
                    i + 1,
                    no + 1,
                    of.unwrap_or(1)
                )));
            }
        }
        let listed = parts[0].get_u64(SPLIT_TENSORS)?;
        let mut parts = parts.into_iter();
        let mut header = parts.next().expect("parts");
        for (i, part) in parts.enumerate() {
            for mut info in part.tensors {
                info.part = i + 1;
                if header
                    .tensor_index
                    .insert(info.name.clone(), header.tensors.len())
                    .is_some()
                {
                    return Err(invalid(format!(
                        "tensor {} is in two parts",
                        quoted(&info.name)
                    )));
                }
                header.tensors.push(info);
            }
        }
        if header.tensors.len() as u64 != listed {
            return Err(Error::Invalid(format!(
                "the parts hold {} tensors, the first says {SPLIT_TENSORS} {listed}",
                header.tensors.len()
            )));
        }
        Ok(header)
    }

    /// Format version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor in it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The value stored under `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All metadata, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value under `key`, or an error naming the missing key.
    fn require(&self, key: &str) -> Result<&Value> {
        self.metadata(key)
            .ok_or_else(|| Error::Invalid(format!("GGUF metadata key {key:?} is missing")))
    }

    /// `key` as an unsigned integer: any integer type whose value fits.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| wrong_type(key, v, "a non-negative integer"))
    }

    /// `key` as a u32: any integer type whose value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let n = self.get_u64(key)?;
        u32::try_from(n).map_err(|_| {
            Error::Invalid(format!(
                "GGUF metadata key {key:?} = {n} does not fit in u32"
            ))
        })
    }

    /// `key` as a signed integer: any integer type whose value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let v = self.require(key)?;
        v.as_i64().ok_or_else(|| wrong_type(key, v, "an integer"))
    }

    /// `key` as an f32 (stored as f32, or as f64 and rounded).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| wrong_type(key, v, "a float"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, v, "a bool"))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, v, "a string"))
    }

    /// An array of strings, e.g. `tokenizer.ggml.tokens` or `tokenizer.ggml.merges`.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            Value::Array(Array::String(v)) => Ok(v),
            v => Err(wrong_type(key, v, "an array of string")),
        }
    }

    /// An array of f32, e.g. `tokenizer.ggml.scores`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.require(key)? {
            Value::Array(Array::F32(v)) => Ok(v),
            v => Err(wrong_type(key, v, "an array of f32")),
        }
    }

    /// An array of i32, e.g. `tokenizer.ggml.token_type`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.require(key)? {
            Value::Array(Array::I32(v)) => Ok(v),
            v => Err(wrong_type(key, v, "an array of i32")),
        }
    }

    /// An array of u32.
    pub fn get_u32_array(&self, key: &str) -> Result<&[u32]> {
        match self.require(key)? {
            Value::Array(Array::U32(v)) => Ok(v),
            v => Err(wrong_type(key, v, "an array of u32")),
        }
    }

    /// `general.architecture`, e.g. `llama`: the prefix of the model's hyperparameter keys.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Where tensor `name` is in [`GgufHeader::tensors`].
    pub fn tensor_position(&self, name: &str) -> Option<usize> {
        self.tensor_index.get(name).copied()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// The file name of part `i` (from 0) of the split model whose first part is `first`
/// (`NAME-00001-of-0000N.gguf`), or `None` when `first` is not named so.
pub fn split_part_name(first: &str, i: usize) -> Option<String> {
    let stem = first.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(no) && digits(count) && no == "00001")
        .then(|| format!("{prefix}-{:05}-of-{count}.gguf", i + 1))
}

fn wrong_type(key: &str, v: &Value, want: &str) -> Error {
    Error::Invalid(format!(
        "GGUF metadata key {key:?} is {}, expected {want}",
        v.type_name()
    ))
}

/// Prefixes the message of a data error with where it happened.
pub(crate) fn context(e: Error, what: impl fmt::Display) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{what}: {m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{what}: {m}")),
        Error::Shape(m) => Error::Invalid(format!("{what}: {m}")),
        other => other,
    }
}

/// `s` quoted and escaped for a one-line message, and cut short: names come from the file,
/// which may make them megabytes long or fill them with control characters.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
    }
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

/// A bounds-checked cursor over the file, or over a prefix of it: counts are checked against
/// the whole file's length, and reading past the prefix but not past the file is recorded
/// (`short`), so a caller can fetch more and parse again.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
    short: bool,
}

impl<'a> Reader<'a> {
    /// Bytes left in the file (not only in the prefix), capped at usize.
    fn remaining(&self) -> usize {
        usize::try_from(self.file_len.saturating_sub(self.pos as u64)).unwrap_or(usize::MAX)
    }

    /// The next `n` bytes; `what` names them in the error if the file ends first.
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(invalid(format!(
                "truncated: {what} at byte {} needs {n} bytes, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        if n > self.buf.len() - self.pos {
            self.short = true;
            return Err(invalid(format!(
                "the header runs past the first {} bytes read",
                self.buf.len()
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A u64 count of items that take at least `min_bytes` each, checked to fit in what is
    /// left of the file (so it also fits in usize).
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = self.remaining();
        if u128::from(n) * min_bytes as u128 > left as u128 {
            return Err(invalid(format!(
                "{what} {n} at byte {at} needs at least {} bytes, only {left} left (truncated or corrupt file)",
                u128::from(n) * min_bytes as u128
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.count(1, what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid(format!("{what} at byte {at} is not valid UTF-8")))
    }

    /// `n` fixed-size little-endian numbers.
    fn numbers<T, const N: usize>(&mut self, n: usize, decode: fn([u8; N]) -> T) -> Result<Vec<T>> {
        let len = n
            .checked_mul(N)
            .ok_or_else(|| invalid(format!("array of {n} elements overflows")))?;
        let bytes = self.take(len, "array data")?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                decode(a)
            })
            .collect())
    }

    fn bool(&mut self) -> Result<bool> {
        let at = self.pos;
        match self.u8("bool")? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(invalid(format!("bool at byte {at} is {b}, not 0 or 1"))),
        }
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32("value type")?;
        ValueType::from_id(id)
            .ok_or_else(|| invalid(format!("unknown value type id {id} at byte {at}")))
    }

    fn value(&mut self, ty: ValueType) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8("u8")?),
            ValueType::I8 => Value::I8(self.u8("i8")? as i8),
            ValueType::U16 => Value::U16(self.array("u16").map(u16::from_le_bytes)?),
            ValueType::I16 => Value::I16(self.array("i16").map(i16::from_le_bytes)?),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(self.array("i32").map(i32::from_le_bytes)?),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(self.array("i64").map(i64::from_le_bytes)?),
            ValueType::F32 => Value::F32(self.array("f32").map(f32::from_le_bytes)?),
            ValueType::F64 => Value::F64(self.array("f64").map(f64::from_le_bytes)?),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string("string")?),
            ValueType::Array => Value::Array(self.array_value(1)?),
        })
    }

    /// An array, itself at nesting level `depth` (1 for a top-level value).
    fn array_value(&mut self, depth: usize) -> Result<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(invalid(format!(
                "arrays nested more than {MAX_ARRAY_DEPTH} deep at byte {}",
                self.pos
            )));
        }
        let ty = self.value_type()?;
        let n = self.count(ty.min_bytes(), "array length")?;
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n, "array data")?.to_vec()),
            ValueType::I8 => Array::I8(
                self.take(n, "array data")?
                    .iter()
                    .map(|&b| b as i8)
                    .collect(),
            ),
            ValueType::U16 => Array::U16(self.numbers(n, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.numbers(n, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.numbers(n, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.numbers(n, i32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.numbers(n, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.numbers(n, i64::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.numbers(n, f32::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.numbers(n, f64::from_le_bytes)?),
            ValueType::Bool => Array::Bool((0..n).map(|_| self.bool()).collect::<Result<_>>()?),
            ValueType::String => {
                let mut v = Vec::with_capacity(n.min(PREALLOC_LIMIT));
                for _ in 0..n {
                    v.push(self.string("string")?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n.min(PREALLOC_LIMIT));
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

/// Parses a whole file's header, metadata and tensor infos, and checks every tensor against
/// the file size.
fn parse(buf: &[u8]) -> Result<GgufHeader> {
    Ok(parse_header(buf, buf.len() as u64)?.expect("a whole file is never short"))
}

/// Parses the header of a `file_len`-byte GGUF file from its first bytes, `prefix`,
/// checking everything as for a whole file (every tensor must fit in `file_len` bytes).
/// `Ok(None)` when the header runs past the prefix: read more and call again.
pub fn parse_header(prefix: &[u8], file_len: u64) -> Result<Option<GgufHeader>> {
    if prefix.len() as u64 > file_len {
        return Err(invalid(format!(
            "{} bytes read from a {file_len}-byte file",
            prefix.len()
        )));
    }
    let mut r = Reader {
        buf: prefix,
        pos: 0,
        file_len,
        short: false,
    };
    match parse_from(&mut r) {
        Ok(header) => Ok(Some(header)),
        Err(_) if r.short => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_from(r: &mut Reader<'_>) -> Result<GgufHeader> {
    let file_len = r.file_len;
    let magic = r.take(4, "magic")?;
    if magic != MAGIC {
        return Err(invalid(format!(
            "not a GGUF file: starts with {magic:02x?}, expected \"GGUF\""
        )));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(invalid(
                "GGUF version 1 is not supported (glim reads versions 2 and 3)".into(),
            ))
        }
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(invalid(format!(
                "big-endian GGUF (version {}) is not supported",
                v.swap_bytes()
            )))
        }
        v => {
            return Err(invalid(format!(
                "unknown GGUF version {v} (glim reads versions 2 and 3)"
            )))
        }
    }
    let n_tensors = r.u64("tensor count")?;
    // Checked against the file now; the tensor count once the metadata has been read.
    let n_kv = r.count(MIN_KV_BYTES, "metadata count")?;

    let mut metadata = Vec::with_capacity(n_kv.min(PREALLOC_LIMIT));
    let mut metadata_index = HashMap::new();
    for i in 0..n_kv {
        let key = r
            .string("metadata key")
            .map_err(|e| context(e, format_args!("metadata entry {i}")))?;
        let value = r
            .value_type()
            .and_then(|ty| r.value(ty))
            .map_err(|e| context(e, format_args!("metadata key {}", quoted(&key))))?;
        if metadata_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(invalid(format!("duplicate metadata key {}", quoted(&key))));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index
        .get("general.alignment")
        .map(|&i| &metadata[i].1)
    {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(Value::U32(a)) => {
            return Err(invalid(format!(
                "general.alignment is {a}, not a power of two"
            )))
        }
        Some(v) => {
            return Err(invalid(format!(
                "general.alignment is {}, expected u32",
                v.type_name()
            )))
        }
    };

    if u128::from(n_tensors) * MIN_TENSOR_INFO_BYTES as u128 > r.remaining() as u128 {
        return Err(invalid(format!(
            "tensor count {n_tensors} needs at least {} bytes of tensor infos, only {} left (truncated or corrupt file)",
            u128::from(n_tensors) * MIN_TENSOR_INFO_BYTES as u128,
            r.remaining()
        )));
    }
    let n_tensors = n_tensors as usize;
    let mut raw = Vec::with_capacity(n_tensors.min(PREALLOC_LIMIT));
    for i in 0..n_tensors {
        let name = r
            .string("tensor name")
            .map_err(|e| context(e, format_args!("tensor info {i}")))?;
        let info =
            tensor_info(r).map_err(|e| context(e, format_args!("tensor {}", quoted(&name))))?;
        raw.push((name, info));
    }

    let data_offset = (r.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| invalid("data section offset overflows".into()))?;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut tensor_index = HashMap::new();
    for (name, (dims, ty, offset)) in raw {
        let info = place_tensor(file_len, data_offset, alignment, name, dims, ty, offset)?;
        if tensor_index
            .insert(info.name.clone(), tensors.len())
            .is_some()
        {
            return Err(invalid(format!(
                "duplicate tensor name {}",
                quoted(&info.name)
            )));
        }
        tensors.push(info);
    }

    Ok(GgufHeader {
        file_len,
        version,
        alignment,
        data_offset,
        metadata,
        metadata_index,
        tensors,
        tensor_index,
    })
}

/// Dims, type and offset of one tensor info (after its name).
fn tensor_info(r: &mut Reader<'_>) -> Result<(Vec<u64>, GgmlType, u64)> {
    let n_dims = r.u32("dimension count")?;
    if n_dims as usize > MAX_DIMS {
        return Err(invalid(format!(
            "{n_dims} dimensions, at most {MAX_DIMS} allowed"
        )));
    }
    let dims = (0..n_dims)
        .map(|_| r.u64("dimension"))
        .collect::<Result<Vec<_>>>()?;
    let ty_id = r.u32("tensor type")?;
    let ty = GgmlType::from_id(ty_id)?;
    let offset = r.u64("tensor offset")?;
    Ok((dims, ty, offset))
}

/// Checks one tensor's shape, alignment and extent against the file and builds its info.
fn place_tensor(
    file_len: u64,
    data_offset: u64,
    alignment: u64,
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
) -> Result<TensorInfo> {
    // ggml keeps sizes in i64; anything beyond is nonsense.
    let limit = i64::MAX as u64;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| {
            acc.checked_mul(d).filter(|&n| n <= limit && d <= limit)
        })
        .ok_or_else(|| {
            invalid(format!(
                "tensor {}: dims {dims:?} overflow the element count",
                quoted(&name)
            ))
        })?;
    let row = dims.first().copied().unwrap_or(1);
    let block = ty.block_size() as u64;
    if !row.is_multiple_of(block) {
        return Err(invalid(format!(
            "tensor {}: row length {row} is not a multiple of the {ty} block size {block}",
            quoted(&name)
        )));
    }
    if !offset.is_multiple_of(alignment) {
        return Err(invalid(format!(
            "tensor {}: offset {offset} is not a multiple of the alignment {alignment}",
            quoted(&name)
        )));
    }
    let extent = (n_elements / block)
        .checked_mul(ty.type_size() as u64)
        .and_then(|n| Some((n, data_offset.checked_add(offset)?)))
        .and_then(|(n, start)| Some((n, start, start.checked_add(n)?)));
    let (n_bytes, start) = match extent {
        Some((n, start, end)) if end <= file_len => (n, start),
        _ => {
            return Err(invalid(format!(
                "tensor {}: {ty} data of dims {dims:?} at offset {offset} runs past the end of the {file_len}-byte file",
                quoted(&name)
            )))
        }
    };
    let n_bytes = usize::try_from(n_bytes).map_err(|_| {
        Error::Unsupported(format!(
            "tensor {}: {n_bytes} bytes, too many for this platform",
            quoted(&name)
        ))
    })?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_elements,
        start,
        n_bytes,
        part: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// A minimal GGUF writer, for building test files byte by byte.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.0.extend(s.as_bytes());
            self
        }
        fn value(&mut self, v: &Value) -> &mut Self {
            match v {
                Value::U8(x) => self.0.push(*x),
                Value::I8(x) => self.0.push(*x as u8),
                Value::U16(x) => self.0.extend(x.to_le_bytes()),
                Value::I16(x) => self.0.extend(x.to_le_bytes()),
                Value::U32(x) => self.0.extend(x.to_le_bytes()),
                Value::I32(x) => self.0.extend(x.to_le_bytes()),
                Value::U64(x) => self.0.extend(x.to_le_bytes()),
                Value::I64(x) => self.0.extend(x.to_le_bytes()),
                Value::F32(x) => self.0.extend(x.to_le_bytes()),
                Value::F64(x) => self.0.extend(x.to_le_bytes()),
                Value::Bool(x) => self.0.push(*x as u8),
                Value::String(s) => {
                    self.str(s);
                }
                Value::Array(a) => {
                    self.array(a);
                }
            }
            self
        }
        fn array(&mut self, a: &Array) -> &mut Self {
            self.u32(a.element_type().id()).u64(a.len() as u64);
            fn each<T: Clone>(w: &mut W, v: &[T], f: fn(T) -> Value) {
                for x in v {
                    w.value(&f(x.clone()));
                }
            }
            match a {
                Array::U8(v) => each(self, v, Value::U8),
                Array::I8(v) => each(self, v, Value::I8),
                Array::U16(v) => each(self, v, Value::U16),
                Array::I16(v) => each(self, v, Value::I16),
                Array::U32(v) => each(self, v, Value::U32),
                Array::I32(v) => each(self, v, Value::I32),
                Array::U64(v) => each(self, v, Value::U64),
                Array::I64(v) => each(self, v, Value::I64),
                Array::F32(v) => each(self, v, Value::F32),
                Array::F64(v) => each(self, v, Value::F64),
                Array::Bool(v) => each(self, v, Value::Bool),
                Array::String(v) => each(self, v, Value::String),
                Array::Array(v) => {
                    for x in v {
                        self.array(x);
                    }
                }
            }
            self
        }
        fn pad_to(&mut self, alignment: usize) {
            while !self.0.len().is_multiple_of(alignment) {
                self.0.push(0);
            }
        }
    }

    struct T<'a> {
        name: &'a str,
        dims: Vec<u64>,
        ty: GgmlType,
        data: Vec<u8>,
    }

    /// A whole GGUF file, tensors laid out one after another at aligned offsets. Returns
    /// the bytes and where the data section starts.
    fn build(version: u32, meta: &[(&str, Value)], tensors: &[T<'_>]) -> (Vec<u8>, usize) {
        let alignment = meta
            .iter()
            .find(|(k, _)| *k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT) as usize;
        let mut w = W::default();
        w.0.extend(MAGIC);
        w.u32(version)
            .u64(tensors.len() as u64)
            .u64(meta.len() as u64);
        for (k, v) in meta {
            w.str(k).u32(v.value_type().id()).value(v);
        }
        let mut offset = 0;
        for t in tensors {
            w.str(t.name).u32(t.dims.len() as u32);
            for &d in &t.dims {
                w.u64(d);
            }
            w.u32(t.ty.id()).u64(offset as u64);
            offset = (offset + t.data.len()).next_multiple_of(alignment);
        }
        w.pad_to(alignment);
        let data_offset = w.0.len();
        for (i, t) in tensors.iter().enumerate() {
            if i > 0 {
                w.pad_to(alignment);
            }
            w.0.extend(&t.data);
        }
        (w.0, data_offset)
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn sample_meta() -> Vec<(&'static str, Value)> {
        vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(30)),
            ("llama.rope.freq_base", Value::F32(100000.0)),
            ("some.f64", Value::F64(0.25)),
            ("some.u8", Value::U8(200)),
            ("some.i8", Value::I8(-5)),
            ("some.u16", Value::U16(60000)),
            ("some.i16", Value::I16(-30000)),
            ("some.i32", Value::I32(-7)),
            ("some.u64", Value::U64(1 << 40)),
            ("some.i64", Value::I64(-(1 << 40))),
            ("some.bool", Value::Bool(true)),
            ("some.unicode", Value::String("héllo ✓ Ġworld".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(vec!["<s>".into(), "a".into(), "".into()])),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(Array::F32(vec![0.0, -1.5, 2.0])),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(Array::I32(vec![3, 1, 1])),
            ),
            ("some.u32s", Value::Array(Array::U32(vec![1, 2]))),
            ("some.bools", Value::Array(Array::Bool(vec![true, false]))),
            ("some.bytes", Value::Array(Array::U8(vec![]))),
            (
                "some.nested",
                Value::Array(Array::Array(vec![
                    Array::I16(vec![1, -2]),
                    Array::Array(vec![Array::String(vec!["deep".into()])]),
                ])),
            ),
        ]
    }

    fn q8_0_block(d: f32, q: i8) -> Vec<u8> {
        let mut b = f16::from_f32(d).to_le_bytes().to_vec();
        b.extend([q as u8; 32]);
        b
    }

    fn sample_tensors() -> Vec<T<'static>> {
        let mut q8 = q8_0_block(0.5, 3);
        q8.extend(q8_0_block(-0.25, 4));
        vec![
            T {
                name: "a.f32",
                dims: vec![3, 2],
                ty: GgmlType::F32,
                data: f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            },
            T {
                name: "b.f16",
                dims: vec![2],
                ty: GgmlType::F16,
                data: [1.5f32, -2.0]
                    .iter()
                    .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                    .collect(),
            },
            T {
                name: "c.q8_0",
                dims: vec![32, 2],
                ty: GgmlType::Q8_0,
                data: q8,
            },
            T {
                name: "d.scalar",
                dims: vec![],
                ty: GgmlType::F32,
                data: f32_bytes(&[7.0]),
            },
        ]
    }

    fn sample_file() -> (Vec<u8>, usize) {
        build(3, &sample_meta(), &sample_tensors())
    }

    #[test]
    fn round_trips_metadata_and_tensors() {
        let (bytes, data_offset) = sample_file();
        let g = GgufFile::from_bytes(bytes.clone()).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.data_offset(), data_offset as u64);
        assert_eq!(g.as_bytes(), &bytes[..]);

        for (k, v) in sample_meta() {
            assert_eq!(g.metadata(k), Some(&v), "{k}");
        }
        let keys: Vec<&str> = g.metadata_entries().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            sample_meta().iter().map(|(k, _)| *k).collect::<Vec<_>>()
        );
        assert_eq!(g.metadata("missing"), None);

        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(g.get_u64("some.u64").unwrap(), 1 << 40);
        assert_eq!(g.get_u32("some.u8").unwrap(), 200);
        assert_eq!(g.get_i64("some.i64").unwrap(), -(1 << 40));
        assert_eq!(g.get_i64("some.u16").unwrap(), 60000);
        assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
        assert_eq!(g.get_f32("some.f64").unwrap(), 0.25);
        assert!(g.get_bool("some.bool").unwrap());
        assert_eq!(g.get_str("some.unicode").unwrap(), "héllo ✓ Ġworld");
        assert_eq!(
            g.get_str_array("tokenizer.ggml.tokens").unwrap(),
            ["<s>", "a", ""]
        );
        assert_eq!(
            g.get_f32_array("tokenizer.ggml.scores").unwrap(),
            [0.0, -1.5, 2.0]
        );
        assert_eq!(
            g.get_i32_array("tokenizer.ggml.token_type").unwrap(),
            [3, 1, 1]
        );
        assert_eq!(g.get_u32_array("some.u32s").unwrap(), [1, 2]);

        // Missing keys, wrong types and out-of-range values are errors that name the key.
        for e in [
            g.get_u32("nope").unwrap_err(),
            g.get_u32("some.i32").unwrap_err(),
            g.get_u32("some.u64").unwrap_err(),
            g.get_u32("general.architecture").unwrap_err(),
            g.get_f32("llama.block_count").unwrap_err(),
            g.get_str("llama.block_count").unwrap_err(),
            g.get_bool("some.u8").unwrap_err(),
            g.get_str_array("tokenizer.ggml.scores").unwrap_err(),
            g.get_f32_array("tokenizer.ggml.tokens").unwrap_err(),
            g.get_i32_array("some.u32s").unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                matches!(e, Error::Invalid(_)) && msg.contains('"') && !msg.contains('\n'),
                "{msg}"
            );
        }
        assert!(g
            .get_str_array("tokenizer.ggml.scores")
            .unwrap_err()
            .to_string()
            .contains("array of f32"));

        let names: Vec<&str> = g.tensors().iter().map(|t| t.name()).collect();
        assert_eq!(names, ["a.f32", "b.f16", "c.q8_0", "d.scalar"]);
        let a = g.tensor("a.f32").unwrap();
        assert_eq!(
            (a.dims(), a.ggml_type(), a.offset()),
            (&[3u64, 2][..], GgmlType::F32, 0)
        );
        assert_eq!(
            (a.row_len(), a.n_rows(), a.n_elements(), a.n_bytes()),
            (3, 2, 6, 24)
        );
        assert_eq!(a.file_offset(), data_offset as u64);
        assert_eq!(
            g.tensor_bytes(a),
            &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[..]
        );
        assert_eq!(
            g.tensor_f32("a.f32").unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(g.tensor_f32("b.f16").unwrap(), [1.5, -2.0]);
        let c = g.tensor("c.q8_0").unwrap();
        assert_eq!((c.offset(), c.n_bytes(), c.n_rows()), (64, 68, 2));
        let q = g.tensor_f32("c.q8_0").unwrap();
        assert!(q[..32].iter().all(|&x| x == 1.5) && q[32..].iter().all(|&x| x == -1.0));
        let s = g.tensor("d.scalar").unwrap();
        assert_eq!(
            (s.dims().len(), s.n_elements(), s.row_len(), s.n_rows()),
            (0, 1, 1, 1)
        );
        assert_eq!(g.tensor_f32("d.scalar").unwrap(), [7.0]);
        assert!(g.tensor("nope").is_none());
        assert!(matches!(g.tensor_f32("nope"), Err(Error::Invalid(_))));
        assert!(format!("{g:?}").contains("tensors: 4"));
    }

    #[test]
    fn reads_version_2_and_custom_alignment() {
        let mut meta = sample_meta();
        meta.push(("general.alignment", Value::U32(64)));
        let (bytes, data_offset) = build(2, &meta, &sample_tensors());
        assert_eq!(data_offset % 64, 0);
        let g = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(
            (g.version(), g.alignment(), g.data_offset()),
            (2, 64, data_offset as u64)
        );
        assert_eq!(g.tensor("b.f16").unwrap().offset(), 64);
        assert_eq!(g.tensor("c.q8_0").unwrap().offset(), 128);
        assert_eq!(g.tensor("d.scalar").unwrap().offset(), 256);
        assert_eq!(g.tensor_f32("d.scalar").unwrap(), [7.0]);
    }

    #[test]
    fn empty_file_with_no_tensors_parses() {
        let (bytes, _) = build(3, &[], &[]);
        assert_eq!(bytes.len(), 24 + 8); // header, padded to 32
        let g = GgufFile::from_bytes(bytes[..24].to_vec()).unwrap();
        assert!(g.tensors().is_empty() && g.metadata_entries().next().is_none());
        assert!(g.architecture().is_err());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn opens_files_through_mmap() {
        let (bytes, _) = sample_file();
        let path = std::env::temp_dir().join(format!("glim-gguf-test-{}.gguf", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let g = GgufFile::open(&path);
        let bad =
            std::env::temp_dir().join(format!("glim-gguf-test-{}-bad.gguf", std::process::id()));
        std::fs::write(&bad, &bytes[..bytes.len() - 1]).unwrap();
        let truncated = GgufFile::open(&bad);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&bad).unwrap();
        let g = g.unwrap();
        assert_eq!(g.as_bytes(), &bytes[..]);
        assert_eq!(
            g.tensor_f32("a.f32").unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let msg = truncated.unwrap_err().to_string();
        assert!(
            msg.contains("bad.gguf") && msg.contains("d.scalar"),
            "{msg}"
        );
        assert!(matches!(
            GgufFile::open("/nonexistent/glim.gguf"),
            Err(Error::Invalid(_))
        ));
    }

    /// Parses `bytes`, which must fail with a one-line `Error::Invalid` containing `needle`.
    fn rejects(bytes: Vec<u8>, needle: &str) {
        match GgufFile::from_bytes(bytes) {
            Err(Error::Invalid(msg)) => {
                assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
                assert!(!msg.contains('\n'), "{msg:?}");
            }
            other => panic!("expected an Invalid error mentioning {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (bytes, _) = sample_file();
        for len in 0..bytes.len() {
            assert!(
                GgufFile::from_bytes(bytes[..len].to_vec()).is_err(),
                "truncated to {len} bytes"
            );
        }
        rejects(bytes[..3].to_vec(), "truncated");
        rejects(bytes[..30].to_vec(), "truncated");
    }

    #[test]
    fn a_header_parses_from_any_prefix_that_holds_it() {
        let (bytes, data_offset) = sample_file();
        let whole = GgufFile::from_bytes(bytes.clone()).unwrap();
        let len = bytes.len() as u64;
        // The infos end somewhere before the aligned data offset.
        let mut first_complete = None;
        for k in 0..=bytes.len() {
            match parse_header(&bytes[..k], len).unwrap() {
                None => assert!(
                    first_complete.is_none(),
                    "prefix {k} short after a full one"
                ),
                Some(header) => {
                    first_complete.get_or_insert(k);
                    assert_eq!(header.file_len(), len);
                    assert_eq!(header.data_offset(), data_offset as u64);
                    assert_eq!(header.tensors(), whole.tensors());
                    assert_eq!(
                        header.metadata_entries().collect::<Vec<_>>(),
                        whole.metadata_entries().collect::<Vec<_>>()
                    );
                }
            }
        }
        let first = first_complete.expect("the whole file parses");
        assert!(first > 24 && first <= data_offset, "complete at {first}");
    }

    #[test]
    fn a_prefix_is_checked_against_the_whole_file() {
        let (bytes, _) = sample_file();
        let len = bytes.len() as u64;
        // A lying count fails at once, however little has been read.
        let liar = header(3, 0, u64::MAX / 64, &[]);
        assert!(parse_header(&liar, len).is_err());
        // Tensors must fit the file the prefix comes from, not the prefix.
        assert!(parse_header(&bytes, len - 1).is_err());
        assert!(parse_header(&bytes, len + 1000).unwrap().is_some());
        assert!(matches!(
            parse_header(&bytes[..4], 3),
            Err(Error::Invalid(m)) if m.contains("bytes read")
        ));
        assert!(parse_header(b"GGML", len).is_err());
    }

    /// A header with the given counts, followed by `rest`.
    fn header(version: u32, n_tensors: u64, n_kv: u64, rest: &[u8]) -> Vec<u8> {
        let mut w = W::default();
        w.0.extend(MAGIC);
        w.u32(version).u64(n_tensors).u64(n_kv);
        w.0.extend(rest);
        w.0
    }

    #[test]
    fn bad_magic_and_versions() {
        let (bytes, _) = sample_file();
        let mut b = bytes.clone();
        b[0] = b'X';
        rejects(b, "not a GGUF file");
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        rejects(b, "version 1");
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&4u32.to_le_bytes());
        rejects(b, "version 4");
        let mut b = bytes;
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        rejects(b, "big-endian");
    }

    #[test]
    fn impossible_counts_and_lengths() {
        rejects(header(3, u64::MAX, 0, &[0; 64]), "tensor count");
        rejects(header(3, 1 << 40, 0, &[0; 64]), "tensor count");
        rejects(header(3, 0, u64::MAX, &[0; 64]), "metadata count");
        // A key whose length is far beyond the file.
        rejects(
            header(3, 0, 1, &W::default().u64(u64::MAX).u64(0).u64(0).0),
            "metadata key",
        );
        rejects(
            header(3, 0, 1, &W::default().u64(1 << 33).u64(0).u64(0).0),
            "metadata key",
        );
        // A string value and arrays that claim more than the file holds.
        let kv = |ty: u32, rest: &[u8]| {
            let mut w = W::default();
            w.str("k").u32(ty);
            w.0.extend(rest);
            header(3, 0, 1, &w.0)
        };
        rejects(kv(8, &u64::MAX.to_le_bytes()), "string");
        let mut arr = 8u32.to_le_bytes().to_vec(); // array of strings...
        arr.extend(u64::MAX.to_le_bytes()); // ...of 2^64 - 1 of them
        rejects(kv(9, &arr), "array length");
        let mut arr = 12u32.to_le_bytes().to_vec(); // array of f64
        arr.extend((1u64 << 61).to_le_bytes());
        arr.extend([0; 16]);
        rejects(kv(9, &arr), "array length");
        let mut arr = 9u32.to_le_bytes().to_vec(); // array of arrays
        arr.extend((1u64 << 60).to_le_bytes());
        rejects(kv(9, &arr), "array length");
        // Unknown value types, bad bools, bad UTF-8.
        rejects(kv(13, &[0; 8]), "unknown value type id 13");
        let mut arr = 77u32.to_le_bytes().to_vec();
        arr.extend(0u64.to_le_bytes());
        rejects(kv(9, &arr), "unknown value type id 77");
        rejects(kv(7, &[2]), "not 0 or 1");
        let mut arr = 7u32.to_le_bytes().to_vec();
        arr.extend(2u64.to_le_bytes());
        arr.extend([1, 5]);
        rejects(kv(9, &arr), "not 0 or 1");
        let mut s = 2u64.to_le_bytes().to_vec();
        s.extend([0xff, 0xfe]);
        rejects(kv(8, &s), "UTF-8");
        // Keys with newlines are quoted and escaped, keeping messages on one line.
        let mut w = W::default();
        w.str("evil\nkey").u32(99);
        rejects(header(3, 0, 1, &w.0), "evil\\nkey");
        // Huge names are cut short in messages.
        let long = "x".repeat(100_000);
        let mut w = W::default();
        w.str(&long).u32(99);
        let msg = GgufFile::from_bytes(header(3, 0, 1, &w.0))
            .unwrap_err()
            .to_string();
        assert!(
            msg.len() < 300 && msg.contains("xxx\"...") && msg.contains("99"),
            "{msg}"
        );
    }

    #[test]
    fn deeply_nested_arrays_are_refused() {
        // 100 levels of "array of 1 array", then nothing: must fail on depth, not overflow the stack.
        let mut w = W::default();
        w.str("k").u32(9);
        for _ in 0..100 {
            w.u32(9).u64(1);
        }
        rejects(header(3, 0, 1, &w.0), "nested");
        // Exactly MAX_ARRAY_DEPTH levels are fine.
        let mut v = Array::U8(vec![42]);
        for _ in 1..MAX_ARRAY_DEPTH {
            v = Array::Array(vec![v]);
        }
        let (bytes, _) = build(3, &[("k", Value::Array(v.clone()))], &[]);
        assert_eq!(
            GgufFile::from_bytes(bytes).unwrap().metadata("k"),
            Some(&Value::Array(v.clone()))
        );
        let (bytes, _) = build(3, &[("k", Value::Array(Array::Array(vec![v])))], &[]);
        rejects(bytes, "nested");
    }

    #[test]
    fn duplicates_and_bad_alignment() {
        let meta = [("a", Value::U8(1)), ("a", Value::U8(2))];
        rejects(build(3, &meta, &[]).0, "duplicate metadata key \"a\"");
        let t = |name| T {
            name,
            dims: vec![1],
            ty: GgmlType::F32,
            data: f32_bytes(&[1.0]),
        };
        rejects(
            build(3, &[], &[t("x"), t("x")]).0,
            "duplicate tensor name \"x\"",
        );
        for (v, needle) in [
            (Value::U32(0), "not a power of two"),
            (Value::U32(48), "not a power of two"),
            (Value::U64(32), "expected u32"),
            (Value::String("32".into()), "expected u32"),
        ] {
            rejects(build(3, &[("general.alignment", v)], &[t("x")]).0, needle);
        }
    }

    /// A file with one tensor info whose dims, type and offset are given raw.
    fn one_tensor(dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
        let mut w = W::default();
        w.str("t").u32(dims.len() as u32);
        for &d in dims {
            w.u64(d);
        }
        w.u32(ty).u64(offset);
        let mut b = header(3, 1, 0, &w.0);
        b.resize(b.len().next_multiple_of(32) + data, 0);
        b
    }

    #[test]
    fn bad_tensor_infos() {
        assert!(GgufFile::from_bytes(one_tensor(&[4, 2], 0, 0, 32)).is_ok());
        rejects(one_tensor(&[4, 2], 0, 0, 31), "past the end");
        rejects(one_tensor(&[4, 2], 0, 32, 32), "past the end");
        rejects(one_tensor(&[4, 2], 0, u64::MAX - 31, 32), "past the end");
        rejects(one_tensor(&[4, 2], 0, 8, 64), "alignment");
        rejects(one_tensor(&[u64::MAX / 2, 4], 0, 0, 32), "overflow");
        rejects(one_tensor(&[1 << 32, 1 << 32], 0, 0, 32), "overflow");
        rejects(one_tensor(&[1 << 62, 2], 0, 0, 32), "overflow");
        rejects(one_tensor(&[0, u64::MAX], 0, 0, 32), "overflow");
        rejects(one_tensor(&[1 << 40], 0, 0, 32), "past the end");
        // Q4_0 rows must be whole 32-element blocks.
        rejects(
            one_tensor(&[16, 2], GgmlType::Q4_0.id(), 0, 64),
            "block size 32",
        );
        rejects(one_tensor(&[1, 1, 1, 1, 1], 0, 0, 32), "5 dimensions");
        // Unknown type ids are unsupported rather than invalid: newer files may have them.
        match GgufFile::from_bytes(one_tensor(&[4], 36, 0, 32)) {
            Err(Error::Unsupported(msg)) => {
                assert!(msg.contains("36") && msg.contains("\"t\""), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // Known but undecodable types parse; decoding them says which type.
        let g = GgufFile::from_bytes(one_tensor(&[256], GgmlType::IQ3_S.id(), 0, 110)).unwrap();
        assert_eq!(g.tensor("t").unwrap().n_bytes(), 110);
        match g.tensor_f32("t") {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("iq3_s"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        let (bytes, _) = sample_file();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                b[i] = match next() % 3 {
                    0 => next() as u8,
                    1 => 0xff,
                    _ => 0,
                };
            }
            if let Ok(g) = GgufFile::from_bytes(b) {
                for t in g.tensors() {
                    let _ = g.tensor_f32(t.name());
                }
            }
        }
    }

    /// The real SmolLM2-135M GGUF, when it is on this machine.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn real_smollm2_file() {
        let Some(path) = crate::test_model_file("real_smollm2_file") else {
            return;
        };
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
        assert_eq!(g.get_u32("llama.attention.head_count").unwrap(), 9);
        assert_eq!(g.get_u32("llama.attention.head_count_kv").unwrap(), 3);
        assert!(g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap() > 0.0);
        let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.len(), 49152);
        assert_eq!(
            g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
            49152
        );

        let emb = g.tensor("token_embd.weight").unwrap();
        assert_eq!(emb.dims(), [576, 49152]);
        let x = g.tensor_f32("token_embd.weight").unwrap();
        assert_eq!(x.len(), 49152 * 576);
        assert!(x.iter().all(|v| v.is_finite()));
        let mean_abs = x.iter().map(|v| v.abs() as f64).sum::<f64>() / x.len() as f64;
        let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            (1e-3..1.0).contains(&mean_abs) && max_abs < 100.0,
            "mean |x| {mean_abs}, max {max_abs}"
        );

        // Every tensor decodes (Q4_1 weights, f32 norms) to finite values of sane size.
        let mut types = std::collections::BTreeSet::new();
        for t in g.tensors() {
            types.insert(t.ggml_type().name());
            let x = g.tensor_f32(t.name()).unwrap();
            assert_eq!(x.len() as u64, t.n_elements());
            assert!(
                x.iter().all(|v| v.is_finite() && v.abs() < 1e4),
                "{}",
                t.name()
            );
        }
        assert!(types.contains("q4_1") && types.contains("f32"), "{types:?}");
    }
}
