//! `pytorch_model.bin` in both formats `torch.save` has written, read without running Python:
//!
//! - **zip** (torch >= 1.6): an uncompressed zip whose `<prefix>/data.pkl` is the state dict's
//!   pickle and `<prefix>/data/<key>` each storage's raw bytes (`<prefix>/byteorder` says
//!   `little` or `big`; files older than that field are little-endian).
//! - **legacy** (earlier torch, or `_use_new_zipfile_serialization=False`; many 2020 hub repos):
//!   five pickles back to back (the magic number 0x1950a86a20f9469cfc6c, the protocol version
//!   1001, a sys_info dict with `little_endian`, the state dict, the list of storage keys) and
//!   then, for each key in that list's order, an 8-byte little-endian element count followed by
//!   the storage's raw bytes.
//!
//! Both pickles go through the same weights-only reader ([`super::pickle`]), so one allowlist
//! decides what a file may contain. Opening checks the whole layout (every storage present and
//! long enough, every tensor inside its storage, every dtype readable); tensors are then read
//! one at a time when the model asks for them, so the peak stays near the weights' own size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{Device, Tensor};

use super::pickle::{unpickle, Input, PickleError, StorageInfo, TensorRef, Unpickled};
use super::weights::TensorFile;
use super::ModelError;

/// torch's `MAGIC_NUMBER`, the first pickle of a legacy file.
const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// torch's `PROTOCOL_VERSION`, the second.
const PROTOCOL_VERSION: i128 = 1001;

/// Which of torch's formats a file is in, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TorchFormat {
    Zip,
    Legacy,
}

/// The format of `path` from its first bytes: a zip's local header `PK\3\4`, or the pickle
/// PROTO opcode 0x80 that starts a legacy file. `Ok(None)`: neither.
pub(crate) fn sniff(path: &Path) -> std::io::Result<Option<TorchFormat>> {
    let mut head = [0u8; 4];
    let mut file = File::open(path)?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(match &head[..read] {
        [b'P', b'K', 3, 4] => Some(TorchFormat::Zip),
        [0x80, 2..=5, ..] => Some(TorchFormat::Legacy),
        _ => None,
    })
}

/// Where the bytes of the storages are.
enum Source {
    /// Storage key -> absolute offset of its first byte.
    Legacy {
        file: Mutex<File>,
        offsets: HashMap<String, u64>,
    },
    /// Storages are the entries `<prefix>data/<key>`, read through the zip reader, which checks
    /// each entry's CRC.
    Zip {
        archive: Mutex<zip::ZipArchive<File>>,
        prefix: String,
    },
}

/// An opened pytorch_model.bin: its tensors by name, their bytes read on demand.
pub(crate) struct TorchFile {
    tensors: HashMap<String, TensorRef>,
    source: Source,
}

/// A damaged file: the message keeps the "download it again" hint. (`Error::Msg` rather than
/// `Error::msg`, which would attach a backtrace under RUST_BACKTRACE: the message is the point.)
fn damaged(path: &Path, problem: impl std::fmt::Display) -> ModelError {
    ModelError::WeightFile {
        file: path.to_path_buf(),
        source: candle_core::Error::Msg(problem.to_string()),
    }
}

/// A pytorch_model.bin that starts like neither format: most likely not the file at all (an
/// error page saved in its place) or damaged, so the repair hint applies.
pub(crate) fn neither_format(path: &Path) -> ModelError {
    damaged(
        path,
        "it starts neither like a zip archive nor like a pickle, as every pytorch_model.bin does",
    )
}

fn not_weights(path: &Path, problem: impl Into<String>) -> ModelError {
    ModelError::WeightFormat {
        file: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn pickle_error(path: &Path, what: &str, e: PickleError) -> ModelError {
    match e {
        PickleError::Damaged(m) => damaged(path, format!("{what}: {m}")),
        PickleError::Format(m) => not_weights(path, format!("{what}: {m}")),
        PickleError::Refused(global) => ModelError::UnsafePickle {
            file: path.to_path_buf(),
            global,
        },
    }
}

impl TorchFile {
    pub(crate) fn open(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        match sniff(path).map_err(io)? {
            Some(TorchFormat::Zip) => Self::open_zip(path),
            Some(TorchFormat::Legacy) => Self::open_legacy(path),
            None => Err(neither_format(path)),
        }
    }

    fn open_legacy(path: &Path) -> Result<Self, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut input = Input::new(BufReader::new(file), 0, len);
        let mut next = |what: &str| -> Result<Unpickled, ModelError> {
            unpickle(&mut input).map_err(|e| pickle_error(path, what, e))
        };
        if next("the magic number")?.value.as_int() != Some(MAGIC) {
            return Err(not_weights(
                path,
                "a pickle without torch's magic number: not written by torch.save",
            ));
        }
        let protocol = next("the protocol version")?.value.as_int();
        if protocol != Some(PROTOCOL_VERSION) {
            return Err(not_weights(
                path,
                format!("torch serialization protocol {protocol:?}, not 1001"),
            ));
        }
        let sys_info = next("sys_info")?.value.dict_entries().unwrap_or_default();
        let little = sys_info
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .and_then(|(_, v)| v.as_bool());
        if little != Some(true) {
            return Err(not_weights(
                path,
                "written on a big-endian machine (sys_info little_endian is not true); only \
                 little-endian files are read",
            ));
        }
        let state = next("the state dict")?;
        let keys = next("the storage key list")?
            .value
            .as_list()
            .ok_or_else(|| {
                damaged(
                    path,
                    "the storage key list after the state dict is not a list",
                )
            })?;
        let mut pos = input.position();
        let mut file = input_file(input);
        let mut offsets = HashMap::new();
        for key in keys {
            let key = key
                .as_str()
                .ok_or_else(|| damaged(path, "a storage key that is not a string"))?
                .to_string();
            let Some(StorageInfo { dtype, numel }) = state.storages.get(&key) else {
                return Err(damaged(
                    path,
                    format!("storage {key} is listed but no tensor uses it"),
                ));
            };
            let mut count = [0u8; 8];
            file.seek(SeekFrom::Start(pos))
                .and_then(|_| file.read_exact(&mut count))
                .map_err(|e| {
                    damaged(
                        path,
                        format!("it ends before storage {key} at byte {pos} ({e})"),
                    )
                })?;
            let count = u64::from_le_bytes(count);
            if count != *numel as u64 {
                return Err(damaged(
                    path,
                    format!("storage {key} at byte {pos} holds {count} elements, its tensors say {numel}"),
                ));
            }
            let end = (pos + 8).checked_add(count.saturating_mul(dtype.size as u64));
            match end {
                Some(end) if end <= len => {
                    offsets.insert(key, pos + 8);
                    pos = end;
                }
                _ => {
                    return Err(damaged(
                        path,
                        format!(
                            "it is cut short: storage {key} ({count} x {}) runs past its end at \
                             byte {len}",
                            dtype.name
                        ),
                    ))
                }
            }
        }
        let tensors = tensors_of(path, state)?;
        if let Some(t) = tensors.values().find(|t| !offsets.contains_key(&t.storage)) {
            return Err(damaged(
                path,
                format!("storage {} of its tensors is missing", t.storage),
            ));
        }
        Ok(Self {
            tensors,
            source: Source::Legacy {
                file: Mutex::new(file),
                offsets,
            },
        })
    }

    fn open_zip(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut archive = zip::ZipArchive::new(file).map_err(|e| damaged(path, e))?;
        let pickle_name = archive
            .file_names_raw()
            .filter_map(|n| std::str::from_utf8(n).ok())
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| {
                not_weights(
                    path,
                    "a zip archive without <name>/data.pkl: not written by torch.save",
                )
            })?;
        let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
        let read_entry = |archive: &mut zip::ZipArchive<File>, name: &str| {
            let mut entry = archive.by_name(name).map_err(|e| damaged(path, e))?;
            let mut bytes = Vec::with_capacity(entry.size().min(file_len) as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| damaged(path, format!("{name}: {e}")))?;
            Ok::<_, ModelError>(bytes)
        };
        let byteorder = format!("{prefix}byteorder");
        if archive.index_for_name(&byteorder).is_some()
            && read_entry(&mut archive, &byteorder)? != b"little"
        {
            return Err(not_weights(
                path,
                "its byteorder is not little-endian; only little-endian files are read",
            ));
        }
        let pickle = read_entry(&mut archive, &pickle_name)?;
        let mut input = Input::new(pickle.as_slice(), 0, pickle.len() as u64);
        let state = unpickle(&mut input).map_err(|e| pickle_error(path, &pickle_name, e))?;
        for (key, info) in &state.storages {
            let name = format!("{prefix}data/{key}");
            let needed = info.numel as u64 * info.dtype.size as u64;
            match archive.by_name(&name) {
                // Stored entries (torch never compresses): no storage is longer than the file.
                Ok(entry) if entry.size() >= needed && needed <= file_len => {}
                Ok(entry) => {
                    return Err(damaged(
                        path,
                        format!(
                            "{name} has {} bytes, its tensors need {needed}",
                            entry.size()
                        ),
                    ))
                }
                Err(e) => return Err(damaged(path, format!("{name}: {e}"))),
            }
        }
        let tensors = tensors_of(path, state)?;
        Ok(Self {
            tensors,
            source: Source::Zip {
                archive: Mutex::new(archive),
                prefix,
            },
        })
    }

    /// The bytes of `t`'s elements, from its first to one past its last (strides may skip some).
    fn span(&self, t: &TensorRef) -> Result<Vec<u8>, String> {
        let size = t.dtype.size;
        let (first, end) = (t.offset, t.end().expect("checked when the pickle was read"));
        let len = (end - first) * size;
        match &self.source {
            Source::Legacy { file, offsets } => {
                let mut file = file.lock().map_err(|_| "weight file lock poisoned")?;
                let mut bytes = vec![0u8; len];
                file.seek(SeekFrom::Start(offsets[&t.storage] + (first * size) as u64))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(|e| e.to_string())?;
                Ok(bytes)
            }
            Source::Zip { archive, prefix } => {
                let mut archive = archive.lock().map_err(|_| "weight file lock poisoned")?;
                let name = format!("{prefix}data/{}", t.storage);
                let mut entry = archive.by_name(&name).map_err(|e| e.to_string())?;
                // The whole entry, so that the zip reader reaches its end and checks the CRC.
                let mut bytes = Vec::with_capacity(first * size + len);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("{name}: {e}"))?;
                bytes.truncate(first * size + len);
                bytes.drain(..first * size);
                Ok(bytes)
            }
        }
    }

    fn read(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() })?;
        let bytes = self
            .span(t)
            .map_err(|e| candle_core::Error::Msg(format!("tensor `{name}`: {e}")))?;
        let bytes = if t.is_contiguous() {
            bytes
        } else {
            gather(&bytes, t.dtype.size, &t.shape, &t.stride)
        };
        let dtype = t.dtype.dtype.expect("checked when the file was opened");
        Tensor::from_raw_buffer(&bytes, dtype, &t.shape, device)
    }
}

/// The file handle under the pickle reader, to read the storages after it.
fn input_file(input: Input<BufReader<File>>) -> File {
    input.into_inner().into_inner()
}

/// The tensors of the top-level dict (a state dict), by name. Other values (numbers, strings)
/// are skipped; a tensor candle cannot hold is refused now rather than when a model asks.
fn tensors_of(path: &Path, state: Unpickled) -> Result<HashMap<String, TensorRef>, ModelError> {
    let entries = state
        .value
        .dict_entries()
        .ok_or_else(|| not_weights(path, "its pickle holds no dict of tensors (a state dict)"))?;
    let mut tensors = HashMap::new();
    for (key, value) in entries {
        let (Some(name), Some(tensor)) = (key.as_str(), value.as_tensor()) else {
            continue;
        };
        if tensor.dtype.dtype.is_none() {
            return Err(not_weights(
                path,
                format!(
                    "tensor `{name}` is stored as {}, a type mtsum cannot use",
                    tensor.dtype.name
                ),
            ));
        }
        tensors.insert(name.to_string(), tensor.clone());
    }
    if tensors.is_empty() {
        return Err(not_weights(path, "its state dict holds no tensors"));
    }
    Ok(tensors)
}

/// The elements of a strided view in row-major order; `bytes` starts at its first element.
fn gather(bytes: &[u8], size: usize, shape: &[usize], stride: &[usize]) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * size);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at: usize = index.iter().zip(stride).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&bytes[at * size..(at + 1) * size]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

impl TensorFile for TorchFile {
    fn tensor(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        self.read(name, device)
    }

    fn holds(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_a_transposed_view() {
        // [[0, 1, 2], [3, 4, 5]] seen as its transpose: [[0, 3], [1, 4], [2, 5]].
        let bytes: Vec<u8> = (0u8..6).collect();
        assert_eq!(gather(&bytes, 1, &[3, 2], &[1, 3]), [0, 3, 1, 4, 2, 5]);
        let wide: Vec<u8> = (0u8..12).collect();
        assert_eq!(
            gather(&wide, 2, &[3], &[2]),
            [0, 1, 4, 5, 8, 9],
            "2-byte elements, every other one"
        );
    }
}
