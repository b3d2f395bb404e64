//! The GGUF header: metadata and tensor directory, read once and checked against the file size,
//! so a cut-short download is reported as such instead of failing deep inside a tensor read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use super::LlmError;

/// The model families mtsum runs, each through candle-transformers' quantized implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen2,
    Qwen3,
    Gemma3,
    Llama,
}

/// `general.architecture` values and the family that runs them. llama.cpp writes "llama" for
/// Llama 1-3 and also for Mistral-style models, which share the layout.
pub const SUPPORTED_ARCHITECTURES: [(&str, Family); 4] = [
    ("qwen2", Family::Qwen2),
    ("qwen3", Family::Qwen3),
    ("gemma3", Family::Gemma3),
    ("llama", Family::Llama),
];

/// A GGUF file's header, with the accessors the engine and the product need.
#[derive(Debug)]
pub struct GgufInfo {
    pub path: PathBuf,
    pub file_size: u64,
    pub content: Content,
    pub architecture: String,
    pub family: Family,
}

impl GgufInfo {
    /// Reads and checks the header of `path`: the magic, the metadata, that every tensor lies
    /// inside the file, and that the architecture is one we run.
    pub fn read(path: &Path) -> Result<Self, LlmError> {
        let io = |source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.is_file() {
            return Err(LlmError::Missing {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic).map_err(io)?;
        if &magic[..got] != b"GGUF" {
            return Err(LlmError::NotGguf {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(&magic[..got]).into_owned(),
            });
        }
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let corrupt = |reason: String| LlmError::Corrupt {
            path: path.to_path_buf(),
            reason,
            size: file_size,
        };
        let content = Content::read(&mut reader).map_err(|e| corrupt(e.to_string()))?;
        check_tensor_extents(&content, file_size).map_err(corrupt)?;
        let architecture = match content.metadata.get("general.architecture") {
            Some(Value::String(name)) => name.clone(),
            _ => {
                return Err(LlmError::Metadata {
                    path: path.to_path_buf(),
                    key: "general.architecture".into(),
                    reason: "missing; every llama.cpp GGUF model names its architecture".into(),
                })
            }
        };
        let family = SUPPORTED_ARCHITECTURES
            .iter()
            .find(|(name, _)| *name == architecture)
            .map(|(_, family)| *family)
            .ok_or_else(|| LlmError::Unsupported {
                path: path.to_path_buf(),
                architecture: architecture.clone(),
                supported: SUPPORTED_ARCHITECTURES
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file_size,
            content,
            architecture,
            family,
        })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer value of any width (writers differ: u32 for most keys, some write i32/u64).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::U8(v) => Some(*v as u64),
            Value::I8(v) => u64::try_from(*v).ok(),
            Value::U16(v) => Some(*v as u64),
            Value::I16(v) => u64::try_from(*v).ok(),
            Value::U32(v) => Some(*v as u64),
            Value::I32(v) => u64::try_from(*v).ok(),
            Value::U64(v) => Some(*v),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// `<architecture>.context_length`: the longest sequence the model was trained for.
    pub fn context_length(&self) -> Option<usize> {
        self.get_u64(&format!("{}.context_length", self.architecture))
            .map(|n| n as usize)
    }

    /// `tokenizer.chat_template`, the Jinja template instruction models carry.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// The quantization as llama.cpp names it: `general.file_type` (the mix llama-quantize was
    /// asked for, e.g. Q4_K_M), else the type holding most bytes of the matrices (the token
    /// embedding and the 1-D norms, often kept wider, left out).
    pub fn quantization(&self) -> String {
        if let Some(name) = self
            .get_u64("general.file_type")
            .and_then(|t| file_type_name(t as u32))
        {
            return name.to_string();
        }
        let mut bytes: HashMap<String, u64> = HashMap::new();
        for (name, info) in &self.content.tensor_infos {
            if name.starts_with("token_embd") || info.shape.rank() < 2 {
                continue;
            }
            *bytes.entry(format!("{:?}", info.ggml_dtype)).or_default() +=
                tensor_bytes(info.ggml_dtype, info.shape.elem_count());
        }
        bytes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(name, _)| name.to_uppercase())
            .unwrap_or_else(|| "unknown".into())
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn tensor_bytes(dtype: GgmlDType, elements: usize) -> u64 {
    (elements / dtype.block_size() * dtype.type_size()) as u64
}

/// Every tensor's data must end inside the file; candle reads them lazily, so without this a
/// truncated download fails later with an opaque read error.
fn check_tensor_extents(content: &Content, file_size: u64) -> Result<(), String> {
    for (name, info) in &content.tensor_infos {
        let elements = info.shape.elem_count();
        if elements % info.ggml_dtype.block_size() != 0 {
            return Err(format!(
                "tensor {name} has {elements} elements, not a multiple of the {:?} block size",
                info.ggml_dtype
            ));
        }
        let end =
            content.tensor_data_offset + info.offset + tensor_bytes(info.ggml_dtype, elements);
        if end > file_size {
            return Err(format!(
                "tensor {name} ends at byte {end}, past the end of the file"
            ));
        }
    }
    Ok(())
}

/// llama.cpp's `llama_ftype` names (`general.file_type`).
fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}
