//! Writing GGUF files (version 3, the layout [`super::gguf`] reads): the header, metadata
//! and tensor infos first, then each tensor's bytes in order, streamed, so a file of
//! several gigabytes never sits in memory.

use std::io::Write;

use super::ggml::GgmlType;
use super::gguf::{Array, Value, DEFAULT_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};

/// A tensor to be written: GGML's dimension order (`dims[0]` varies fastest).
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorSpec {
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
}
