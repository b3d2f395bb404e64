//! The weight files of a model folder, opened through candle's `VarBuilder`: model.safetensors,
//! sharded safetensors (model.safetensors.index.json), or pytorch_model.bin in torch's zip or
//! legacy format (our own weights-only pickle reader, [`super::torch_file`]: a pickle is never
//! executed). Every failure names the file and the tensor at fault. [`locate`] tells which file
//! and format a folder's weights come from without reading them.
//!
//! Safetensors are read tensor by tensor with positioned reads rather than memory-mapped:
//! candle copies every tensor out of a mapping anyway, and while the whole file stays mapped its
//! pages count as resident, so loading peaked at twice the weights. Reading each tensor straight
//! into the buffer that becomes its storage keeps the peak at the weights plus one tensor.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::linear::WeightPrecision;
use super::torch_file::{self, TorchFile, TorchFormat};
use super::ModelError;

/// The formats a model folder's weights may come in, in the order [`Weights::open`] prefers
/// them (transformers' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// model.safetensors
    Safetensors,
    /// model.safetensors.index.json and the shards it names
    ShardedSafetensors,
    /// pytorch_model.bin written by torch >= 1.6 (a zip archive)
    ZipBin,
    /// pytorch_model.bin in torch's legacy serialization (pickles, then raw storages), as many
    /// repos converted in 2020 ship it
    LegacyBin,
}

impl WeightFormat {
    /// A short name for people: `safetensors`, `sharded safetensors`, `zip .bin`, `legacy .bin`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::ShardedSafetensors => "sharded safetensors",
            Self::ZipBin => "zip .bin",
            Self::LegacyBin => "legacy .bin",
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Which weight file a model folder's weights come from, as [`Weights::open`] chooses it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WeightSource {
    pub format: WeightFormat,
    /// The file named in messages: the weight file, or the index of a sharded checkpoint.
    pub file: PathBuf,
    /// Every file read: `file` itself, or the index's shards.
    pub files: Vec<PathBuf>,
    /// Total size in bytes of `files` (and the index, when sharded).
    pub bytes: u64,
}

/// The weight file and format of the model folder `dir`, found the way [`Weights::open`] finds
/// them (safetensors, then sharded safetensors, then pytorch_model.bin), without reading any
/// tensor: for `mtsum models inspect`. A pytorch_model.bin's format is told by its first bytes;
/// one that is neither a zip nor a pickle is reported as damaged (the repair hint), as is a
/// shard the index names but the folder lacks.
pub fn locate(dir: &Path) -> Result<WeightSource, ModelError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let pickle = dir.join("pytorch_model.bin");
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })
    };
    let (format, file, files) = if single.is_file() {
        (WeightFormat::Safetensors, single.clone(), vec![single])
    } else if index.is_file() {
        let shards = shard_files(&index)?;
        (WeightFormat::ShardedSafetensors, index, shards)
    } else if pickle.is_file() {
        let format = match torch_file::sniff(&pickle).map_err(|source| ModelError::Io {
            path: pickle.clone(),
            source,
        })? {
            Some(TorchFormat::Zip) => WeightFormat::ZipBin,
            Some(TorchFormat::Legacy) => WeightFormat::LegacyBin,
            None => return Err(torch_file::neither_format(&pickle)),
        };
        (format, pickle.clone(), vec![pickle])
    } else {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    };
    let mut bytes = 0;
    for f in &files {
        bytes += size(f)?;
    }
    if format == WeightFormat::ShardedSafetensors {
        bytes += size(&file)?;
    }
    Ok(WeightSource {
        format,
        file,
        files,
        bytes,
    })
}

/// An opened set of weights, converted to one dtype on one device as tensors are read.
pub struct Weights {
    vb: VarBuilder<'static>,
    /// What the messages name: the file, or the index of a sharded checkpoint.
    file: PathBuf,
    /// How the linear layers hold what they read (int8 under `--dtype int8`).
    precision: WeightPrecision,
}

impl Weights {
    /// Opens the weights of `dir`, preferring safetensors (as transformers does).
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let source = locate(dir)?;
        let backend: Box<dyn SimpleBackend> = match source.format {
            WeightFormat::Safetensors | WeightFormat::ShardedSafetensors => {
                Box::new(Backend(SafetensorsFiles::open(&source.files)?))
            }
            WeightFormat::ZipBin | WeightFormat::LegacyBin => {
                Box::new(Backend(TorchFile::open(&source.file)?))
            }
        };
        Ok(Self {
            vb: VarBuilder::from_backend(backend, dtype, device.clone()),
            file: source.file,
            precision: WeightPrecision::Float,
        })
    }

    /// The same weights, with the linear layers built from them held as `precision` says.
    pub fn with_precision(self, precision: WeightPrecision) -> Self {
        Self { precision, ..self }
    }

    /// How the linear layers built from these weights hold them.
    pub fn precision(&self) -> WeightPrecision {
        self.precision
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

    /// The tensor `name` converted to `dtype` instead of the set's dtype, from the stored values
    /// (T5 keeps its feed-forward output projections in f32 when the rest runs in f16).
    pub fn get_in_dtype<S: Into<Shape>>(
        &self,
        name: &str,
        shape: S,
        dtype: DType,
    ) -> Result<Tensor, ModelError> {
        let shape = shape.into();
        if !self.contains(name) {
            return Err(self.missing(name));
        }
        let tensor = (self.vb.get_unchecked_dtype(name, dtype)).map_err(|source| {
            ModelError::WeightFile {
                file: self.file.clone(),
                source,
            }
        })?;
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
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let names = shard_names(&text).map_err(|problem| ModelError::WeightFile {
        file: index.to_path_buf(),
        source: candle_core::Error::msg(problem),
    })?;
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

/// The shard file names of a model.safetensors.index.json's `weight_map`, sorted and without
/// repeats (the hub fetches them, the loader opens them). Each must be a plain file name beside
/// the index: no folders, no `..`. `Err` says what is wrong with the text.
pub(crate) fn shard_names(index_json: &str) -> Result<Vec<String>, String> {
    let json: serde_json::Value =
        serde_json::from_str(index_json).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no `weight_map` object")?;
    let names = map
        .values()
        .map(|v| {
            v.as_str()
                .filter(|name| is_plain_file_name(name))
                .map(str::to_string)
                .ok_or_else(|| format!("`weight_map` names {v}, not a file beside the index"))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(names.into_iter().collect())
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != ".." && name != "."
}

/// Where one tensor lies in a safetensors file.
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// One or more safetensors files, read one tensor at a time.
struct SafetensorsFiles {
    files: Vec<(PathBuf, Mutex<File>)>,
    entries: HashMap<String, Entry>,
}

impl SafetensorsFiles {
    fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let io = |source| ModelError::Io {
                path: path.clone(),
                source,
            };
            let mut file = File::open(path).map_err(io)?;
            let file_len = file.metadata().map_err(io)?.len();
            let header = read_header(&mut file, path)?;
            let data_start = 8 + header.len() as u64;
            for (name, entry) in parse_header(&header, path)? {
                let (start, end) = (data_start + entry.start, data_start + entry.end);
                let bytes = entry.shape.iter().product::<usize>() * entry.dtype.size_in_bytes();
                if end > file_len || end < start || (end - start) as usize != bytes {
                    return Err(corrupt(
                        path,
                        format!("tensor `{name}` has a bad byte range"),
                    ));
                }
                entries.insert(
                    name,
                    Entry {
                        file: index,
                        start,
                        end,
                        ..entry
                    },
                );
            }
            files.push((path.clone(), Mutex::new(file)));
        }
        Ok(Self { files, entries })
    }

    fn read(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() })?;
        let (path, file) = &self.files[entry.file];
        let len = (entry.end - entry.start) as usize;
        let mut file = file
            .lock()
            .map_err(|_| candle_core::Error::msg("weight file lock poisoned"))?;
        let read = |file: &mut File, buf: &mut [u8]| -> candle_core::Result<()> {
            file.seek(SeekFrom::Start(entry.start))?;
            file.read_exact(buf)
                .map_err(|e| candle_core::Error::msg(format!("{}: {e}", path.display())))
        };
        if entry.dtype == DType::F32 && cfg!(target_endian = "little") {
            // Read straight into the vector that becomes the tensor's storage.
            let mut values = vec![0f32; len / 4];
            // SAFETY: any bit pattern is a valid f32, and the byte view covers exactly `values`.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), len) };
            read(&mut file, bytes)?;
            return Tensor::from_vec(values, entry.shape.as_slice(), device);
        }
        let mut bytes = vec![0u8; len];
        read(&mut file, &mut bytes)?;
        Tensor::from_raw_buffer(&bytes, entry.dtype, &entry.shape, device)
    }
}

impl TensorFile for SafetensorsFiles {
    fn tensor(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        self.read(name, device)
    }

    fn holds(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// A weight file read one named tensor at a time, in the dtype it stores: what each format
/// (safetensors, torch's .bin) implements, so that one [`Backend`] serves candle for all.
pub(super) trait TensorFile: Send + Sync {
    /// The tensor `name` as stored, on `device`.
    fn tensor(&self, name: &str, device: &Device) -> candle_core::Result<Tensor>;
    fn holds(&self, name: &str) -> bool;
}

/// Any [`TensorFile`] as candle's `VarBuilder` backend: each tensor converted to the dtype
/// asked for, its shape checked against the one the model expects.
struct Backend<F>(F);

impl<F: TensorFile> SimpleBackend for Backend<F> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "{name}: shape {:?}, expected {:?}",
                tensor.dims(),
                shape.dims()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.tensor(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.holds(name)
    }
}

fn corrupt(path: &Path, problem: String) -> ModelError {
    ModelError::WeightFile {
        file: path.to_path_buf(),
        source: candle_core::Error::msg(format!("not a valid safetensors file: {problem}")),
    }
}

/// The JSON header: an 8-byte little-endian length, then that many bytes.
fn read_header(file: &mut File, path: &Path) -> Result<Vec<u8>, ModelError> {
    const MAX_HEADER: u64 = 100 << 20;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| corrupt(path, format!("no header length ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(corrupt(path, format!("header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(path, format!("truncated header ({e})")))?;
    Ok(header)
}

/// Tensor name -> entry (file index 0, offsets relative to the data section).
fn parse_header(header: &[u8], path: &Path) -> Result<Vec<(String, Entry)>, ModelError> {
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| corrupt(path, format!("header is not JSON ({e})")))?;
    json.into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let bad = |what: &str| corrupt(path, format!("tensor `{name}`: {what}"));
            let dtype = match info["dtype"].as_str() {
                Some("BOOL") => DType::U8,
                Some(d) => d
                    .to_lowercase()
                    .parse::<DType>()
                    .map_err(|_| bad(&format!("unsupported dtype {d}")))?,
                None => return Err(bad("no dtype")),
            };
            let numbers = |key: &str| -> Option<Vec<u64>> {
                info[key].as_array()?.iter().map(|v| v.as_u64()).collect()
            };
            let shape = numbers("shape").ok_or_else(|| bad("no shape"))?;
            let offsets = numbers("data_offsets")
                .filter(|o| o.len() == 2)
                .ok_or_else(|| bad("no data_offsets"))?;
            let entry = Entry {
                file: 0,
                dtype,
                shape: shape.into_iter().map(|d| d as usize).collect(),
                start: offsets[0],
                end: offsets[1],
            };
            Ok((name, entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &Path) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let tensors: HashMap<String, Tensor> = [
            (
                "a",
                Tensor::arange(0f32, 6.0, &dev)
                    .unwrap()
                    .reshape((2, 3))
                    .unwrap(),
            ),
            (
                "b",
                Tensor::new(&[1.5f32, -2.0], &dev)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            ),
            ("c", Tensor::new(&[7u32, 8, 9], &dev).unwrap()),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        tensors
    }

    #[test]
    fn reads_every_tensor_as_written_in_the_asked_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = saved(dir.path());
        let w = Weights::open(dir.path(), DType::F32, &Device::Cpu).unwrap();
        let a = w.get("a", (2, 3)).unwrap();
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            tensors["a"].to_vec2::<f32>().unwrap()
        );
        assert_eq!(
            w.get("b", 2).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.5, -2.0]
        );
        assert_eq!(w.get("b", 2).unwrap().dtype(), DType::F32);
        assert!(w.contains("c") && !w.contains("d"));
        let err = w.get("a", (3, 2)).unwrap_err().to_string();
        assert!(err.contains("`a`") && err.contains("[3, 2]"), "{err}");
        let err = w.get("d", 1).unwrap_err().to_string();
        assert!(
            err.contains("`d`") && err.contains("model.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        saved(dir.path());
        let path = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        for keep in [4, 20, bytes.len() - 3] {
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let err = match Weights::open(dir.path(), DType::F32, &Device::Cpu) {
                Ok(_) => panic!("opened a file cut at {keep} bytes"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("model.safetensors"), "{err}");
        }
    }

    #[test]
    fn a_missing_shard_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors"}}"#;
        std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
        let err = Weights::open(dir.path(), DType::F32, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");
    }

    #[test]
    fn a_shard_outside_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        saved(dir.path());
        let outside = dir.path().join("model.safetensors");
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let index = r#"{"weight_map": {"a": "../model.safetensors"}}"#;
        std::fs::write(model.join("model.safetensors.index.json"), index).unwrap();
        assert!(outside.is_file());
        let err = Weights::open(&model, DType::F32, &Device::Cpu)
            .err()
            .expect("a shard outside the model folder is not opened")
            .to_string();
        assert!(err.contains("not a file beside the index"), "{err}");
    }
}
