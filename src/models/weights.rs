//! The weight files of a model folder, opened through candle's `VarBuilder`: model.safetensors
//! (memory-mapped), sharded safetensors (model.safetensors.index.json), or pytorch_model.bin
//! (candle's pickle reader). Every failure names the file and the tensor at fault.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use super::ModelError;

/// An opened set of weights, converted to one dtype on one device as tensors are read.
pub struct Weights {
    vb: VarBuilder<'static>,
    /// What the messages name: the file, or the index of a sharded checkpoint.
    file: PathBuf,
}

impl Weights {
    /// Opens the weights of `dir`, preferring safetensors (as transformers does).
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let pickle = dir.join("pytorch_model.bin");
        let (file, vb) = if single.is_file() {
            // SAFETY: the file is mapped read-only; like every memory-mapped reader we rely on
            // nobody truncating it while the model loads.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&single], dtype, device) };
            (single, vb)
        } else if index.is_file() {
            let shards = shard_files(&index)?;
            // SAFETY: as above.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&shards, dtype, device) };
            (index, vb)
        } else if pickle.is_file() {
            let vb = VarBuilder::from_pth(&pickle, dtype, device);
            (pickle, vb)
        } else {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let vb = vb.map_err(|source| ModelError::WeightFile {
            file: file.clone(),
            source,
        })?;
        Ok(Self { vb, file })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn dtype(&self) -> DType {
        self.vb.dtype()
    }

    pub fn device(&self) -> &Device {
        self.vb.device()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get<S: Into<Shape>>(&self, name: &str, shape: S) -> Result<Tensor, ModelError> {
        let shape = shape.into();
        let tensor = self.get_any_shape(name)?;
        if tensor.shape() != &shape {
            return Err(ModelError::WrongShape {
                file: self.file.clone(),
                name: name.into(),
                expected: format!("{:?}", shape.dims()),
                found: format!("{:?}", tensor.dims()),
            });
        }
        Ok(tensor)
    }

    /// The first of `names` that the file holds (checkpoints name tied weights differently).
    pub fn get_first<S: Into<Shape>>(
        &self,
        names: &[&str],
        shape: S,
    ) -> Result<Tensor, ModelError> {
        match names.iter().find(|n| self.contains(n)) {
            Some(name) => self.get(name, shape),
            None => Err(self.missing(&names.join(" or "))),
        }
    }

    fn get_any_shape(&self, name: &str) -> Result<Tensor, ModelError> {
        if !self.contains(name) {
            return Err(self.missing(name));
        }
        self.vb
            .get_unchecked(name)
            .map_err(|source| ModelError::WeightFile {
                file: self.file.clone(),
                source,
            })
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingWeight {
            file: self.file.clone(),
            name: name.into(),
        }
    }
}

/// The shard files named by a model.safetensors.index.json, in a stable order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let bad = |problem: String| ModelError::BadConfig {
        file: index.to_path_buf(),
        field: "weight_map".into(),
        problem,
    };
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing or not an object".into()))?;
    let names = map
        .values()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| bad(format!("expected file names, found {v}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let dir = index.parent().unwrap_or(Path::new("."));
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::Io {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("shard named in {} is missing", index.display()),
                    ),
                })
            }
        })
        .collect()
}
