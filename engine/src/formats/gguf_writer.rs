//! Writing GGUF files (version 3, the layout [`super::gguf`] reads): the header, metadata
//! and tensor infos first, then each tensor's bytes in order, streamed, so a file of
//! several gigabytes never sits in memory.

use std::io::Write;

use super::ggml::GgmlType;
use super::gguf::{
    Array, GgufFile, Value, DEFAULT_ALIGNMENT, MAGIC, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS,
};
use crate::error::{Error, Result};

/// A tensor to be written: GGML's dimension order (`dims[0]` varies fastest).
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorSpec {
    /// The spec of a tensor a GGUF file holds, to write it again.
    pub fn of(info: &super::gguf::TensorInfo) -> Self {
        Self {
            name: info.name().to_string(),
            dims: info.dims().to_vec(),
            ggml_type: info.ggml_type(),
        }
    }

    /// Bytes of data: whole rows of `dims[0]` elements.
    pub fn n_bytes(&self) -> Result<usize> {
        let rows: u64 = self.dims.iter().skip(1).product();
        let row = self.ggml_type.row_bytes(self.dims[0] as usize)?;
        Ok(row * rows as usize)
    }
}

/// A GGUF file being written: tensors go in with [`GgufWriter::write_tensor`] in the order
/// they were declared.
pub struct GgufWriter<W: Write> {
    out: W,
    sizes: Vec<(String, usize)>,
    next: usize,
}

fn pad_len(len: u64) -> u64 {
    len.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT - len
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header, `metadata` and the infos of `tensors` (offsets laid out at the
    /// default alignment of 32 bytes).
    pub fn new(out: W, metadata: &[(&str, Value)], tensors: &[TensorSpec]) -> Result<Self> {
        let mut head = Vec::new();
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            put_str(&mut head, key);
            head.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut head, value);
        }
        let mut offset = 0u64;
        let mut sizes = Vec::new();
        for t in tensors {
            if t.dims.is_empty() || t.dims.len() > super::gguf::MAX_DIMS {
                return Err(Error::Invalid(format!(
                    "tensor {} has {} dimensions",
                    t.name,
                    t.dims.len()
                )));
            }
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            let n = t.n_bytes()?;
            sizes.push((t.name.clone(), n));
            offset += n as u64 + pad_len(n as u64);
        }
        head.resize(head.len() + pad_len(head.len() as u64) as usize, 0);
        let mut writer = Self {
            out,
            sizes,
            next: 0,
        };
        writer.put(&head)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::Invalid(format!("cannot write the GGUF file: {e}")))
    }

    /// Writes the next tensor's data, which must be exactly its size.
    pub fn write_tensor(&mut self, bytes: &[u8]) -> Result<()> {
        let Some((name, size)) = self.sizes.get(self.next).cloned() else {
            return Err(Error::Invalid(
                "more tensor data than tensors declared".into(),
            ));
        };
        if bytes.len() != size {
            return Err(Error::Invalid(format!(
                "tensor {name} takes {size} bytes, got {}",
                bytes.len()
            )));
        }
        self.put(bytes)?;
        self.put(&vec![0; pad_len(size as u64) as usize])?;
        self.next += 1;
        Ok(())
    }

    /// Checks every declared tensor was written and flushes.
    pub fn finish(mut self) -> Result<W> {
        if let Some((name, _)) = self.sizes.get(self.next) {
            return Err(Error::Invalid(format!("tensor {name} was never written")));
        }
        self.out
            .flush()
            .map_err(|e| Error::Invalid(format!("cannot write the GGUF file: {e}")))?;
        Ok(self.out)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(*v as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&(array.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    fn each<T>(out: &mut Vec<u8>, items: &[T], put: impl Fn(&mut Vec<u8>, &T)) {
        for item in items {
            put(out, item);
        }
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each(out, v, |o, x| o.push(*x as u8)),
        Array::String(v) => each(out, v, |o, s| put_str(o, s)),
        Array::Array(v) => each(out, v, put_array),
    }
}

/// Writes `file` again as `parts` files in llama.cpp's `gguf-split` layout: the tensors in
/// order, about as many in each part; every metadata key in the first part, and each part's
/// `split.*` keys. `out(i)` opens part `i` (from 0); the written parts come back.
pub fn write_split<W: Write>(
    file: &GgufFile,
    parts: usize,
    mut out: impl FnMut(usize) -> Result<W>,
) -> Result<Vec<W>> {
    let tensors = file.tensors();
    if parts < 2 || parts > tensors.len() || parts > u16::MAX as usize {
        return Err(Error::Invalid(format!(
            "cannot split {} tensors into {parts} parts",
            tensors.len()
        )));
    }
    let split_keys = |i: usize| {
        vec![
            (SPLIT_NO, Value::U16(i as u16)),
            (SPLIT_COUNT, Value::U16(parts as u16)),
            (SPLIT_TENSORS, Value::I32(tensors.len() as i32)),
        ]
    };
    let mut written = Vec::new();
    for i in 0..parts {
        let mut metadata = Vec::new();
        if i == 0 {
            metadata.extend(
                file.metadata_entries()
                    .filter(|(k, _)| !k.starts_with("split."))
                    .map(|(k, v)| (k, v.clone())),
            );
        }
        metadata.extend(split_keys(i));
        let mine = &tensors[i * tensors.len() / parts..(i + 1) * tensors.len() / parts];
        let specs: Vec<TensorSpec> = mine.iter().map(TensorSpec::of).collect();
        let mut writer = GgufWriter::new(out(i)?, &metadata, &specs)?;
        for t in mine {
            writer.write_tensor(file.tensor_bytes(t))?;
        }
        written.push(writer.finish()?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::super::gguf::GgufFile;
    use super::*;

    /// What the writer writes, the reader reads back: metadata of every kind, tensor infos
    /// and data at aligned offsets.
    #[test]
    fn written_files_read_back() {
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("a.u32", Value::U32(7)),
            ("a.f32", Value::F32(1.5)),
            ("a.bool", Value::Bool(true)),
            (
                "a.strings",
                Value::Array(Array::String(vec!["x".into(), "yz".into()])),
            ),
            ("a.i32s", Value::Array(Array::I32(vec![-1, 2]))),
        ];
        let tensors = [
            TensorSpec {
                name: "w".into(),
                dims: vec![64, 3],
                ggml_type: GgmlType::Q4_0,
            },
            TensorSpec {
                name: "n".into(),
                dims: vec![5],
                ggml_type: GgmlType::F32,
            },
        ];
        let mut writer = GgufWriter::new(Vec::new(), &metadata, &tensors).unwrap();
        let q4: Vec<u8> = (0..tensors[0].n_bytes().unwrap())
            .map(|i| i as u8)
            .collect();
        assert_eq!(q4.len(), 3 * 2 * 18);
        let norm: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(writer.write_tensor(&norm).is_err(), "wrong size");
        writer.write_tensor(&q4).unwrap();
        assert!(GgufWriter::new(Vec::new(), &metadata, &tensors)
            .unwrap()
            .finish()
            .is_err());
        writer.write_tensor(&norm).unwrap();
        let bytes = writer.finish().unwrap();

        let file = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(file.version(), 3);
        for (key, value) in &metadata {
            assert_eq!(file.metadata(key), Some(value), "{key}");
        }
        assert_eq!(file.tensor_f32("n").unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0]);
        let w = file.tensor("w").unwrap();
        assert_eq!(w.dims(), [64, 3]);
        assert_eq!(w.offset() % DEFAULT_ALIGNMENT, 0);
        assert_eq!(file.tensor_bytes(w), q4.as_slice());
    }

    #[test]
    fn split_files_read_back_as_one_model() {
        use crate::formats::gguf::split_part_name;
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(3)),
        ];
        let tensors: Vec<TensorSpec> = (0..5)
            .map(|i| TensorSpec {
                name: format!("t{i}"),
                dims: vec![8 + i],
                ggml_type: GgmlType::F32,
            })
            .collect();
        let mut w = GgufWriter::new(Vec::new(), &metadata, &tensors).unwrap();
        for t in &tensors {
            let values: Vec<u8> = (0..t.dims[0])
                .flat_map(|v| (v as f32).to_le_bytes())
                .collect();
            w.write_tensor(&values).unwrap();
        }
        let whole = GgufFile::from_bytes(w.finish().unwrap()).unwrap();

        let parts = write_split(&whole, 3, |_| Ok(Vec::new())).unwrap();
        let split = GgufFile::from_parts(parts.clone()).unwrap();
        assert_eq!(split.metadata("llama.block_count"), Some(&Value::U32(3)));
        let names = |f: &GgufFile| {
            f.tensors()
                .iter()
                .map(|t| t.name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&split), names(&whole));
        assert_eq!(
            split.tensors().iter().map(|t| t.part()).collect::<Vec<_>>(),
            [0, 1, 1, 2, 2]
        );
        for t in whole.tensors() {
            assert_eq!(
                split.tensor_f32(t.name()).unwrap(),
                whole.tensor_f32(t.name()).unwrap()
            );
        }
        // Parts missing, out of order, or alone are refused.
        let refused = |parts: Vec<Vec<u8>>| GgufFile::from_parts(parts).err().unwrap().to_string();
        assert!(refused(parts[..2].to_vec()).contains("2 parts given"));
        let swapped = vec![parts[0].clone(), parts[2].clone(), parts[1].clone()];
        assert!(refused(swapped).contains("part 2 says it is part 3 of 3"));
        assert!(refused(parts[1..2].to_vec()).contains("1 parts given"));

        // On disk, the first part opens them all; another part says which to open.
        let dir = std::env::temp_dir().join(format!("glim-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, bytes) in parts.iter().enumerate() {
            std::fs::write(dir.join(format!("m-{:05}-of-00003.gguf", i + 1)), bytes).unwrap();
        }
        let opened = GgufFile::open(dir.join("m-00001-of-00003.gguf")).unwrap();
        assert_eq!(
            opened.tensor_f32("t4").unwrap(),
            whole.tensor_f32("t4").unwrap()
        );
        let err = GgufFile::open(dir.join("m-00002-of-00003.gguf"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("is part 2 of 3 of a split model"),
            "{err}"
        );
        std::fs::remove_file(dir.join("m-00003-of-00003.gguf")).unwrap();
        assert!(GgufFile::open(dir.join("m-00001-of-00003.gguf")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(
            split_part_name("m-Q4_K-00001-of-00003.gguf", 2).as_deref(),
            Some("m-Q4_K-00003-of-00003.gguf")
        );
        assert_eq!(split_part_name("m-00002-of-00003.gguf", 0), None);
        assert_eq!(split_part_name("m.gguf", 1), None);
    }
}
