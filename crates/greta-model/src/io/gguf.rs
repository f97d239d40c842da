//! GGUF v2/v3 reader: header, metadata, tensor infos, alignment, memory-mapped tensor data.
//!
//! Every length read from the file is checked against the bytes that remain before it is
//! used, so a truncated or corrupt file gives an error naming the field and the offset,
//! never a panic or an out-of-bounds slice. The parser works on a byte slice so that the
//! fuzz target can drive it without a file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::quant::GgmlType;
use super::FormatError;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml supports at most 4 dimensions; a larger count means a corrupt header.
const MAX_DIMS: u32 = 4;

/// A metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// Any integer type, widened; None for non-integers and negative values.
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

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
}

/// One tensor's header entry. `dims` is in GGML order: `dims[0]` is the contiguous one.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape in row-major order (outermost first), as PyTorch and numpy write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn n_bytes(&self) -> u64 {
        self.ggml_type.row_bytes(self.n_elements())
    }
}

/// The parsed header of a GGUF file: everything but the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn fmt::Display) -> Result<&'a [u8], FormatError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(FormatError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                available: remaining,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn fmt::Display) -> Result<[u8; N], FormatError> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("length checked by take"))
    }

    fn u32(&mut self, what: &dyn fmt::Display) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn fmt::Display) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn fmt::Display) -> Result<String, FormatError> {
        let len = self.u64(what)?;
        let offset = self.pos as u64;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| FormatError::Corrupt {
            what: what.to_string(),
            offset,
            reason: "string is not valid UTF-8".into(),
        })
    }

    fn value(
        &mut self,
        ty: u32,
        what: &dyn fmt::Display,
        depth: u32,
    ) -> Result<Value, FormatError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let offset = self.pos as u64;
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(FormatError::Corrupt {
                            what: what.to_string(),
                            offset,
                            reason: format!("bool byte is {b}, accepted: 0 or 1"),
                        })
                    }
                }
            }
            8 => Value::String(self.string(what)?),
            9 => {
                let offset = self.pos as u64;
                if depth > 0 {
                    return Err(FormatError::Corrupt {
                        what: what.to_string(),
                        offset,
                        reason: "nested arrays are not supported".into(),
                    });
                }
                let elem_ty = self.u32(what)?;
                let count = self.u64(what)?;
                // Every element takes at least one byte: a count beyond the remaining bytes
                // is corrupt, and checking it here keeps a bad count from allocating.
                let remaining = (self.bytes.len() - self.pos) as u64;
                if count > remaining {
                    return Err(FormatError::Truncated {
                        what: format!("{what} (array of {count} elements)"),
                        offset,
                        needed: count,
                        available: remaining,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(FormatError::Corrupt {
                    what: what.to_string(),
                    offset: self.pos as u64 - 4,
                    reason: format!("unknown metadata value type {other}, accepted: 0..=12"),
                })
            }
        })
    }
}

impl GgufHeader {
    /// Parses the header from the start of a GGUF file. `bytes` must hold the whole file:
    /// tensor ranges are checked against its length.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic = c.array::<4>(&"magic")?;
        if &magic != MAGIC {
            return Err(FormatError::Corrupt {
                what: "magic".into(),
                offset: 0,
                reason: format!("expected \"GGUF\", found {magic:02x?}: not a GGUF file"),
            });
        }
        let version = c.u32(&"version")?;
        if !(2..=3).contains(&version) {
            return Err(FormatError::Unsupported(format!(
                "GGUF version {version}; accepted: 2 and 3"
            )));
        }
        let n_tensors = c.u64(&"tensor count")?;
        let n_kv = c.u64(&"metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format_args!("metadata key #{i}"))?;
            let ty = c.u32(&format_args!("type of metadata {key:?}"))?;
            let value = c.value(ty, &format_args!("metadata {key:?}"), 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(FormatError::Corrupt {
                        what: "metadata \"general.alignment\"".into(),
                        offset: 0,
                        reason: format!("{v:?} is not a power of two"),
                    })
                }
            },
        };
        // Each tensor info takes at least 24 bytes; reject absurd counts before allocating.
        let remaining = (bytes.len() - c.pos) as u64;
        if n_tensors > remaining / 24 {
            return Err(FormatError::Truncated {
                what: format!("tensor infos ({n_tensors} tensors)"),
                offset: c.pos as u64,
                needed: n_tensors.saturating_mul(24),
                available: remaining,
            });
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format_args!("name of tensor #{i}"))?;
            let what = format!("tensor {name:?}");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(FormatError::Corrupt {
                    what,
                    offset: c.pos as u64 - 4,
                    reason: format!("{n_dims} dimensions, accepted: 1..={MAX_DIMS}"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let ty_offset = c.pos as u64;
            let ty = c.u32(&what)?;
            let ggml_type = GgmlType::from_id(ty).ok_or_else(|| FormatError::UnknownQuantType {
                id: ty,
                tensor: name.clone(),
            })?;
            let offset = c.u64(&what)?;
            let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let Some(n_elements) = n_elements else {
                return Err(FormatError::Corrupt {
                    what,
                    offset: ty_offset,
                    reason: format!("dimensions {dims:?} overflow"),
                });
            };
            if dims[0] % ggml_type.block_size() as u64 != 0 {
                return Err(FormatError::Corrupt {
                    what,
                    offset: ty_offset,
                    reason: format!(
                        "row length {} is not a multiple of the {:?} block size {}",
                        dims[0],
                        ggml_type,
                        ggml_type.block_size()
                    ),
                });
            }
            let _ = n_elements;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let header = GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        };
        header.check_tensor_ranges(bytes.len() as u64)?;
        Ok(header)
    }

    fn check_tensor_ranges(&self, file_len: u64) -> Result<(), FormatError> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(FormatError::Corrupt {
                    what: format!("tensor {:?}", t.name),
                    offset: 0,
                    reason: "the name appears twice".into(),
                });
            }
            if t.offset % self.alignment != 0 {
                return Err(FormatError::Corrupt {
                    what: format!("tensor {:?}", t.name),
                    offset: self.data_offset + t.offset,
                    reason: format!(
                        "data offset {} is not aligned to {}",
                        t.offset, self.alignment
                    ),
                });
            }
            let start = self.data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes()));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(FormatError::Truncated {
                        what: format!("data of tensor {:?}", t.name),
                        offset: self.data_offset.saturating_add(t.offset),
                        needed: t.n_bytes(),
                        available: file_len
                            .saturating_sub(self.data_offset.saturating_add(t.offset)),
                    })
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, FormatError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| FormatError::BadMetadata {
                key: key.to_string(),
                reason: format!(
                    "expected {expected}, found {} {:?}",
                    v.type_name(),
                    short(v)
                ),
            }),
        }
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, FormatError> {
        self.typed(key, "an unsigned integer", Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, FormatError> {
        self.typed(key, "a number", Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, FormatError> {
        self.typed(key, "a bool", |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, FormatError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(FormatError::BadMetadata {
                key: key.to_string(),
                reason: format!("expected a string, found {}", v.type_name()),
            }),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>, FormatError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(FormatError::BadMetadata {
                key: key.to_string(),
                reason: format!("expected an array, found {}", v.type_name()),
            }),
        }
    }

    pub fn require_u64(&self, key: &str) -> Result<u64, FormatError> {
        self.get_u64(key)?
            .ok_or_else(|| FormatError::MissingMetadata(key.to_string()))
    }

    pub fn require_f64(&self, key: &str) -> Result<f64, FormatError> {
        self.get_f64(key)?
            .ok_or_else(|| FormatError::MissingMetadata(key.to_string()))
    }
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.len() > 60 {
        format!("{}...", &s[..60])
    } else {
        s
    }
}

/// A GGUF file opened with mmap: the header plus access to each tensor's bytes.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    map: memmap2::Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::Io {
            path: path.to_path_buf(),
            error: e,
        })?;
        // SAFETY: the map is read-only; a file changed underneath us while mapped is outside
        // what any mmap-based loader (llama.cpp's included) can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::Io {
            path: path.to_path_buf(),
            error: e,
        })?;
        let header = GgufHeader::parse(&map).map_err(|e| e.in_file(path))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            header,
            map,
        })
    }

    /// The raw bytes of one tensor (range checked at open).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + t.offset) as usize;
        &self.map[start..start + t.n_bytes() as usize]
    }

    /// The whole file, for content hashing.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Dequantizes one tensor to f32.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError> {
        let t = self
            .header
            .tensor(name)
            .ok_or_else(|| FormatError::MissingTensor(name.to_string()))?;
        let values =
            super::quant::dequantize(t.ggml_type, self.tensor_bytes(t), t.n_elements() as usize)?;
        Ok((t.shape(), values))
    }
}
