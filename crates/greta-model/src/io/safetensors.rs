//! Hugging Face safetensors checkpoints: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped, parsed by the `safetensors` crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::FormatError;

pub struct SafetensorsCheckpoint {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// tensor name -> index into `files`
    index: HashMap<String, usize>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |error| FormatError::Io {
        path: path.to_path_buf(),
        error,
    }
}

impl SafetensorsCheckpoint {
    /// Opens the checkpoint in a Hugging Face model directory.
    pub fn open_dir(dir: &Path) -> Result<Self, FormatError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                FormatError::Corrupt {
                    what: "index json".into(),
                    offset: 0,
                    reason: e.to_string(),
                }
                .in_file(&index_path)
            })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    FormatError::BadMetadata {
                        key: "weight_map".into(),
                        reason: "missing or not an object".into(),
                    }
                    .in_file(&index_path)
                })?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
            vec!["model.safetensors".to_string()]
        } else {
            return Err(FormatError::Io {
                path: single,
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the directory",
                ),
            });
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in shard_names {
            let path = dir.join(&name);
            let file = std::fs::File::open(&path).map_err(io_err(&path))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| {
                FormatError::Corrupt {
                    what: "safetensors header".into(),
                    offset: 0,
                    reason: e.to_string(),
                }
                .in_file(&path)
            })?;
            for tname in st.names() {
                index.insert(tname.to_string(), files.len());
            }
            drop(st);
            files.push((path, map));
        }
        Ok(SafetensorsCheckpoint { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Reads one tensor as f32 with its shape (row-major).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FormatError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| FormatError::MissingTensor(name.to_string()))?;
        let (path, map) = &self.files[i];
        let st = SafeTensors::deserialize(map).map_err(|e| {
            FormatError::Corrupt {
                what: "safetensors header".into(),
                offset: 0,
                reason: e.to_string(),
            }
            .in_file(path)
        })?;
        let view = st.tensor(name).map_err(|e| {
            FormatError::Corrupt {
                what: format!("tensor {name:?}"),
                offset: 0,
                reason: e.to_string(),
            }
            .in_file(path)
        })?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(FormatError::Unsupported(format!(
                    "tensor {name:?} in {} has dtype {other:?}; accepted: F32, F16, BF16",
                    path.display()
                )))
            }
        };
        Ok((view.shape().to_vec(), values))
    }
}
