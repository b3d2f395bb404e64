//! Model families (one module each, following Hugging Face weight names), chosen from
//! config.json's `model_type`: `bart` (Marian, BART, mBART) and `t5` (T5, mT5). Both implement
//! the [`Seq2Seq`] trait of `crate::seq2seq` through [`AnyModel`]; [`load`] is the entry point.
//! Also owned here: config.json as transformers reads it, weight files, and the CPU kernels of
//! the linear layers (`gemm` in f32, `qgemm` in int8).

pub mod bart;
pub mod common;
pub mod config;
mod encoder_attention;
mod expf;
pub mod gelu;
pub mod gemm;
mod host_attention;
pub mod linear;
mod pickle;
pub mod qgemm;
pub mod t5;
mod torch_file;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use common::DecoderCache;
pub use config::{ModelConfig, ModelType};
pub use linear::WeightPrecision;

use crate::seq2seq::{Seq2Seq, SpecialTokens};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: field `{field}`: {problem}")]
    BadConfig {
        file: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{file}: model_type `{model_type}` is not supported (supported: marian, bart, mbart, t5, mt5)")]
    UnsupportedModelType { file: PathBuf, model_type: String },
    #[error("{dir}: no weights found (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin); point to the model's folder, or fetch the model with `mtsum models fetch`")]
    NoWeights { dir: PathBuf },
    #[error("{file}: cannot read weights: {source}; if the file is cut short or damaged, download it again (`mtsum models verify --repair` for a cached hub model)")]
    WeightFile {
        file: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A weight file that is intact but not something mtsum reads (no download changes it).
    #[error("{file}: {problem}; this is not a weights file mtsum can read, and downloading it again will not change that: use the repo's model.safetensors if it has one, or convert the weights with transformers (`save_pretrained(dir, safe_serialization=True)`)")]
    WeightFormat { file: PathBuf, problem: String },
    /// A pickle that would run code when Python loads it; nothing of it was executed.
    #[error("{file} is not a plain weights file: its pickle imports `{global}`, which a state dict never needs (torch's weights-only loader refuses it too). mtsum never runs code from a weight file and will not load this one; get the weights from a source you trust (the repo's model.safetensors if it has one)")]
    UnsafePickle { file: PathBuf, global: String },
    #[error("{file}: weight `{name}` is missing; the file does not match config.json's model_type and sizes")]
    MissingWeight { file: PathBuf, name: String },
    #[error("{file}: weight `{name}` has shape {found}, but config.json implies {expected}")]
    WrongShape {
        file: PathBuf,
        name: String,
        expected: String,
        found: String,
    },
    #[error("the {side} has {tokens} tokens, more than the model's {max} positions (max_position_embeddings); {advice}", advice = side.advice())]
    TooLong {
        side: Side,
        tokens: usize,
        max: usize,
    },
    /// A thread count of zero (the command line checks its flag before this).
    #[error("the thread count must be at least 1")]
    NoThreads,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Which side of the model ran out of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The encoder input.
    Source,
    /// The generated text.
    Target,
}

impl Side {
    fn advice(self) -> &'static str {
        match self {
            Self::Source => "split the text into shorter segments",
            Self::Target => "ask for fewer new tokens (--max-length)",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Target => "target",
        })
    }
}

/// Sets how many CPU threads candle uses. Must run before any tensor work.
///
/// candle's CPU kernels read the thread count from `RAYON_NUM_THREADS` (matmul, through the gemm
/// crate's parallelism) and `CANDLE_NUM_THREADS` (its own barrier pool for element-wise work),
/// and use rayon's global pool; all three are set here.
///
/// The barrier pool's workers spin 25,000 times after each element-wise op before they sleep,
/// competing with the matmul threads for the same cores; unless the user chose a limit, the
/// spin is cut to 1,000 (on a loaded 2-core machine: about 15 % less CPU time per decode).
pub fn set_threads(n: usize) -> Result<(), ModelError> {
    if n == 0 {
        return Err(ModelError::NoThreads);
    }
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
    // Fails only if the global pool already exists, i.e. tensor work already ran: then the
    // pool keeps its size, but matmul still honours the variables set above.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}

/// A loaded model of any supported family.
pub enum AnyModel {
    /// marian, bart, mbart
    Bart(bart::BartModel),
    /// t5, mt5
    T5(t5::T5Model),
}

/// Loads the model in `dir` (config.json, optional generation_config.json, and
/// model.safetensors / model.safetensors.index.json + shards / pytorch_model.bin), with its
/// weights converted to `dtype` on `device`.
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<AnyModel, ModelError> {
    load_with(dir, device, dtype, WeightPrecision::Float)
}

/// [`load`], with the linear layers held as `precision` says (int8: f32 on the CPU only, as
/// the loader checks before).
pub fn load_with(
    dir: &Path,
    device: &Device,
    dtype: DType,
    precision: WeightPrecision,
) -> Result<AnyModel, ModelError> {
    let config = ModelConfig::read(dir)?;
    let weights = weights::Weights::open(dir, dtype, device)?.with_precision(precision);
    Ok(match config.model_type {
        ModelType::Marian | ModelType::Bart | ModelType::MBart => {
            AnyModel::Bart(bart::BartModel::load(&config, &weights)?)
        }
        ModelType::T5 | ModelType::MT5 => AnyModel::T5(t5::T5Model::load(&config, &weights)?),
    })
}

impl AnyModel {
    fn head(&self) -> &common::OutputHead {
        match self {
            Self::Bart(m) => m.head(),
            Self::T5(m) => m.head(),
        }
    }

    /// config.json's model_type.
    pub fn model_type(&self) -> ModelType {
        match self {
            Self::Bart(m) => m.model_type(),
            Self::T5(m) => m.model_type(),
        }
    }
}

impl Seq2Seq for AnyModel {
    type Cache = DecoderCache;

    fn encode(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Bart(m) => m.encode(ids, mask),
            Self::T5(m) => m.encode(ids, mask),
        }
    }

    fn start_decoding(&self, encoded: &Tensor, mask: &Tensor) -> candle_core::Result<DecoderCache> {
        match self {
            Self::Bart(m) => m.start_decoding(encoded, mask),
            Self::T5(m) => m.start_decoding(encoded, mask),
        }
    }

    fn decode_step(&self, last: &Tensor, cache: &mut DecoderCache) -> candle_core::Result<Tensor> {
        match self {
            Self::Bart(m) => m.decode_step(last, cache),
            Self::T5(m) => m.decode_step(last, cache),
        }
    }

    fn blocked_head(&self) -> bool {
        self.head().blocked()
    }

    fn decode_step_blocks(
        &self,
        last: &Tensor,
        cache: &mut DecoderCache,
        block: usize,
        f: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> candle_core::Result<Tensor> {
        if !self.blocked_head() {
            candle_core::bail!("this model's output layer does not run by blocks");
        }
        let hidden = match self {
            Self::Bart(m) => m.decode_hidden(last, cache)?,
            Self::T5(m) => m.decode_hidden(last, cache)?,
        };
        self.head().logits_blocks(&hidden, block, f)?;
        Ok(hidden)
    }

    fn logits_of(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.head().logits(hidden)
    }

    fn select_rows(&self, cache: &mut DecoderCache, rows: &Tensor) -> candle_core::Result<()> {
        cache.select_rows(rows)
    }

    fn special_tokens(&self) -> &SpecialTokens {
        match self {
            Self::Bart(m) => m.special_tokens(),
            Self::T5(m) => m.special_tokens(),
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Self::Bart(m) => m.vocab_size(),
            Self::T5(m) => m.vocab_size(),
        }
    }

    fn max_source_positions(&self) -> Option<usize> {
        match self {
            Self::Bart(m) => Some(m.max_source_positions()),
            Self::T5(_) => None,
        }
    }
}
