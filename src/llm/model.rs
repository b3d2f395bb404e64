//! A GGUF LLM on candle-transformers' quantized families, and the sessions that run it: a prompt
//! goes through in one batched forward, then tokens are decoded one by one on the KV cache.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};

use super::gguf::{Family, GgufInfo};
use super::template::{ChatTemplate, Message};
use super::tokenizer::GgufTokenizer;
use super::LlmError;

/// The weights of the families whose candle-transformers `ModelWeights` is `Clone`: cloning
/// shares the quantized tensors (`Arc`s) and copies only the KV cache handles, which is how a
/// session starts (from the model's cache-less copy) and how it forks after a shared prefix.
#[derive(Clone)]
enum Weights {
    Qwen3(quantized_qwen3::ModelWeights),
    Gemma3(super::gemma3::Gemma3),
    Llama(quantized_llama::ModelWeights),
}

impl Weights {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        match self {
            Weights::Qwen3(m) => m.forward(input, position),
            Weights::Gemma3(m) => m.forward(input, position),
            Weights::Llama(m) => m.forward(input, position),
        }
    }
}

/// candle-transformers' Qwen2 `ModelWeights` is not `Clone` (and its KV cache is private), so
/// one instance serves every session in turn: it remembers which tokens its cache holds, and a
/// session whose tokens do not extend them has its own tokens fed again first. Forks of a
/// shared prefix therefore run the prefix again for Qwen2, except the first continuation.
struct SharedQwen2 {
    weights: quantized_qwen2::ModelWeights,
    cached: Vec<u32>,
}

enum Backend {
    Clonable(Weights),
    Shared(Mutex<SharedQwen2>),
}

/// A session's handle on the weights: its own copy, or its turn on the shared Qwen2.
#[derive(Clone)]
enum SessionWeights {
    Owned(Box<Weights>),
    Shared,
}

/// How to pick each next token. Greedy (the highest logit) unless a temperature is given;
/// with one, sampling (nucleus when `top_p` is given) is reproducible for a given `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: None,
            top_p: None,
            seed: 299792458,
        }
    }
}

/// What to generate: at most `max_new_tokens`, stopping at any of `stop_ids` (the model's
/// end-of-turn ids when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingOptions,
    pub stop_ids: Option<Vec<u32>>,
}

impl GenerateOptions {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            sampling: SamplingOptions::default(),
            stop_ids: None,
        }
    }
}

/// One decoding step as the callback sees it: the token picked and the logits it was picked
/// from (before temperature).
#[derive(Debug)]
pub struct Step<'a> {
    pub index: usize,
    pub token: u32,
    pub logits: &'a [f32],
}

/// A finished continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens, without the stop token.
    pub ids: Vec<u32>,
    /// The stop token that ended it; `None` when `max_new_tokens` (or the context) did.
    pub stopped_by: Option<u32>,
    /// Logits that chose the first new token (the comparison point with other engines).
    pub first_logits: Vec<f32>,
    /// Tokens fed before generating (this call's part, not a forked prefix).
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub decode_time: Duration,
}

/// A GGUF model: its header, tokenizer, chat template and weights. Running it goes through
/// [`Session`]s, so one loaded model serves many prompts (and forks of one prompt).
pub struct GgufModel {
    info: GgufInfo,
    tokenizer: GgufTokenizer,
    template: Option<ChatTemplate>,
    backend: Backend,
    device: Device,
    stop_ids: Vec<u32>,
}

impl GgufModel {
    /// Opens a GGUF file with the tokenizer in its metadata.
    pub fn open(path: &Path, device: &Device) -> Result<Self, LlmError> {
        Self::open_with_tokenizer(path, None, device)
    }

    /// Opens a GGUF file; `tokenizer_json`, when given, replaces its own tokenizer.
    pub fn open_with_tokenizer(
        path: &Path,
        tokenizer_json: Option<&Path>,
        device: &Device,
    ) -> Result<Self, LlmError> {
        let info = GgufInfo::read(path)?;
        let tokenizer = match tokenizer_json {
            Some(json) => GgufTokenizer::from_tokenizer_json(&info, json)?,
            None => GgufTokenizer::from_gguf(&info)?,
        };
        let text_of = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_string()
        };
        let template = match info.chat_template() {
            Some(source) => Some(ChatTemplate::new(
                source,
                &text_of(tokenizer.bos_id()),
                &text_of(tokenizer.eos_id()),
                path.to_path_buf(),
            )?),
            None => None,
        };
        let mut stop_ids: Vec<u32> = Vec::new();
        let mut add = |id: Option<u32>| {
            if let Some(id) = id {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        };
        add(tokenizer.eos_id());
        add(info
            .get_u64("tokenizer.ggml.eot_token_id")
            .map(|id| id as u32));
        add(info
            .get_u64("tokenizer.ggml.eom_token_id")
            .map(|id| id as u32));
        for id in tokenizer.end_of_generation_ids() {
            add(Some(*id));
        }
        let backend = load_weights(&info, device)?;
        Ok(Self {
            info,
            tokenizer,
            template,
            backend,
            device: device.clone(),
            stop_ids,
        })
    }

    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// `general.architecture`, e.g. "gemma3".
    pub fn architecture(&self) -> &str {
        &self.info.architecture
    }

    pub fn family(&self) -> Family {
        self.info.family
    }

    /// llama.cpp's name of the quantization, e.g. "Q4_K_M".
    pub fn quantization(&self) -> String {
        self.info.quantization()
    }

    /// The trained context length (`<arch>.context_length`).
    pub fn context_length(&self) -> Option<usize> {
        self.info.context_length()
    }

    /// `general.name`, when the file has one.
    pub fn name(&self) -> Option<&str> {
        self.info.get_str("general.name")
    }

    /// The header, for any metadata key not covered here.
    pub fn info(&self) -> &GgufInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The Jinja source of the chat template, when the file has one (base models do not).
    pub fn chat_template(&self) -> Option<&str> {
        self.info.chat_template()
    }

    /// The chat prompt for `messages` in the model's own format, assistant turn opened.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String, LlmError> {
        match &self.template {
            Some(template) => template.render(messages, true),
            None => Err(LlmError::Template {
                path: self.info.path.clone(),
                reason: "the file has no tokenizer.chat_template (a base model?); \
                         use an instruction-tuned GGUF"
                    .into(),
            }),
        }
    }

    /// The ids of a rendered chat prompt (special tokens parsed, BOS once).
    pub fn encode_prompt(&self, rendered: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer.encode_prompt(rendered)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.tokenizer.bos_id()
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.tokenizer.eos_id()
    }

    /// The ids generation stops at, llama.cpp's end-of-generation set: EOS, the EOT and EOM
    /// ids, and the vocabulary's end-of-turn texts (`<end_of_turn>`, `<|im_end|>`, ...).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh session (empty KV cache).
    pub fn session(&self) -> Session<'_> {
        Session {
            model: self,
            weights: match &self.backend {
                Backend::Clonable(weights) => SessionWeights::Owned(Box::new(weights.clone())),
                Backend::Shared(_) => SessionWeights::Shared,
            },
            ids: Vec::new(),
            logits: None,
        }
    }

    /// Feeds `prompt` to a fresh session and generates: the one-call form.
    pub fn generate(
        &self,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<Generation, LlmError> {
        let mut session = self.session();
        let started = Instant::now();
        session.feed(prompt)?;
        let prompt_time = started.elapsed();
        let mut generation = session.generate(options, &mut |_| {})?;
        generation.prompt_tokens = prompt.len();
        generation.prompt_time = prompt_time;
        Ok(generation)
    }

    fn candle(&self, source: candle_core::Error) -> LlmError {
        LlmError::Candle {
            path: self.info.path.clone(),
            source,
        }
    }
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("path", &self.info.path)
            .field("architecture", &self.info.architecture)
            .finish_non_exhaustive()
    }
}

/// One running sequence: the tokens fed so far and the KV cache they left.
#[derive(Clone)]
pub struct Session<'m> {
    model: &'m GgufModel,
    weights: SessionWeights,
    ids: Vec<u32>,
    logits: Option<Vec<f32>>,
}

impl<'m> Session<'m> {
    /// The tokens fed so far (the prompt and whatever was generated).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The logits after the last token fed.
    pub fn logits(&self) -> Option<&[f32]> {
        self.logits.as_deref()
    }

    /// Runs `ids` through the model after what was fed before, in one batched forward, and
    /// returns the logits for the next token.
    pub fn feed(&mut self, ids: &[u32]) -> Result<&[f32], LlmError> {
        if ids.is_empty() {
            return self.logits.as_deref().ok_or_else(|| LlmError::Generation {
                path: self.model.info.path.clone(),
                reason: "nothing to run: the prompt has no tokens".into(),
            });
        }
        if let Some(limit) = self.model.context_length() {
            if self.ids.len() + ids.len() > limit {
                return Err(LlmError::Generation {
                    path: self.model.info.path.clone(),
                    reason: format!(
                        "{} tokens do not fit the model's context of {limit}",
                        self.ids.len() + ids.len()
                    ),
                });
            }
        }
        let logits = self.forward(ids)?;
        self.ids.extend_from_slice(ids);
        Ok(self.logits.insert(logits))
    }

    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, LlmError> {
        let model = self.model;
        let device = &model.device;
        let position = self.ids.len();
        let logits = match (&mut self.weights, &model.backend) {
            (SessionWeights::Owned(weights), _) => {
                run_forward(device, ids, position, |x, p| weights.forward(x, p))
            }
            (SessionWeights::Shared, Backend::Shared(shared)) => {
                let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
                let shared = &mut *shared;
                let extends = shared.cached.len() <= self.ids.len()
                    && self.ids[..shared.cached.len()] == shared.cached[..];
                if !extends {
                    shared.weights.clear_kv_cache();
                    shared.cached.clear();
                }
                let missing = self.ids[shared.cached.len()..].to_vec();
                if !missing.is_empty() {
                    let start = shared.cached.len();
                    run_forward(device, &missing, start, |x, p| shared.weights.forward(x, p))
                        .map_err(|e| model.candle(e))?;
                }
                shared.cached = self.ids.clone();
                let logits =
                    run_forward(device, ids, position, |x, p| shared.weights.forward(x, p));
                if logits.is_ok() {
                    shared.cached.extend_from_slice(ids);
                } else {
                    shared.weights.clear_kv_cache();
                    shared.cached.clear();
                }
                logits
            }
            (SessionWeights::Shared, Backend::Clonable(_)) => {
                unreachable!("a shared session is only made for a shared backend")
            }
        };
        logits.map_err(|e| model.candle(e))
    }

    /// A copy of this session that continues independently: the shared prefix is not run
    /// again. The copy shares the cached keys and values (candle tensors are immutable and
    /// the caches grow by concatenation). Two exceptions feed the prefix again: Qwen3 off the
    /// CPU, whose preallocated cache is written in place, and Qwen2, whose one shared instance
    /// keeps one cache (the first fork to continue uses it as it is).
    pub fn fork(&self) -> Result<Session<'m>, LlmError> {
        let in_place_cache = matches!(&self.weights, SessionWeights::Owned(w) if matches!(**w, Weights::Qwen3(_)))
            && !self.model.device.is_cpu();
        if !in_place_cache {
            return Ok(self.clone());
        }
        let mut fresh = self.model.session();
        if !self.ids.is_empty() {
            fresh.feed(&self.ids.clone())?;
        }
        Ok(fresh)
    }

    /// Generates after what was fed (at least one token must have been), calling `on_step`
    /// for each token picked.
    pub fn generate(
        &mut self,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(&Step<'_>),
    ) -> Result<Generation, LlmError> {
        let path = self.model.info.path.clone();
        let Some(mut logits) = self.logits.clone() else {
            return Err(LlmError::Generation {
                path,
                reason: "generate before any prompt was fed".into(),
            });
        };
        let stop_ids = options
            .stop_ids
            .clone()
            .unwrap_or_else(|| self.model.stop_ids.clone());
        let sampling = match (options.sampling.temperature, options.sampling.top_p) {
            (None, _) => Sampling::ArgMax,
            (Some(t), _) if t <= 0.0 => Sampling::ArgMax,
            (Some(temperature), None) => Sampling::All { temperature },
            (Some(temperature), Some(p)) => Sampling::TopP { p, temperature },
        };
        let greedy = matches!(sampling, Sampling::ArgMax);
        let mut processor = LogitsProcessor::from_sampling(options.sampling.seed, sampling);
        let context = self.model.context_length().unwrap_or(usize::MAX);
        let started = Instant::now();
        let mut ids = Vec::new();
        let mut stopped_by = None;
        let first_logits = logits.clone();
        for index in 0..options.max_new_tokens {
            let token = if greedy {
                argmax(&logits)
            } else {
                let tensor = Tensor::new(logits.as_slice(), &Device::Cpu)
                    .map_err(|e| self.model.candle(e))?;
                processor
                    .sample(&tensor)
                    .map_err(|e| self.model.candle(e))?
            };
            on_step(&Step {
                index,
                token,
                logits: &logits,
            });
            if stop_ids.contains(&token) {
                stopped_by = Some(token);
                break;
            }
            ids.push(token);
            if index + 1 == options.max_new_tokens || self.ids.len() + 1 > context {
                break;
            }
            logits = self.feed(&[token])?.to_vec();
        }
        Ok(Generation {
            ids,
            stopped_by,
            first_logits,
            prompt_tokens: 0,
            prompt_time: Duration::ZERO,
            decode_time: started.elapsed(),
        })
    }
}

/// One forward of `ids` at `position`; the logits of the last one, as f32 on the host.
fn run_forward(
    device: &Device,
    ids: &[u32],
    position: usize,
    mut forward: impl FnMut(&Tensor, usize) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Vec<f32>> {
    let input = Tensor::new(ids, device)?.unsqueeze(0)?;
    let logits = forward(&input, position)?;
    logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// The index of the highest logit, the first one on a tie (as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, value) in logits.iter().enumerate() {
        if *value > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn load_weights(info: &GgufInfo, device: &Device) -> Result<Backend, LlmError> {
    let path = &info.path;
    let io = |source| LlmError::Io {
        path: path.clone(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    // The model constructors take the header by value; read it again rather than clone.
    let content = Content::read(&mut reader).map_err(|e| LlmError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
        size: info.file_size,
    })?;
    let loaded = match info.family {
        Family::Qwen2 => quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
            .map(|weights| {
                Backend::Shared(Mutex::new(SharedQwen2 {
                    weights,
                    cached: Vec::new(),
                }))
            }),
        Family::Qwen3 => {
            // candle-transformers' Qwen3 computes its RoPE table in `general.dtype`, F16 when
            // the key is absent (llama.cpp never writes it): angles then carry f16 rounding
            // (logits 0.08 from llama.cpp's on the tiny fixture, worse at later positions).
            // F32 keeps them exact; the weights stay as quantized.
            let mut content = content;
            content
                .metadata
                .insert("general.dtype".into(), gguf_file::Value::U32(0));
            quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, device)
                .map(|m| Backend::Clonable(Weights::Qwen3(m)))
        }
        Family::Gemma3 => super::gemma3::Gemma3::load(info, &content, &mut reader, device)
            .map(|m| Backend::Clonable(Weights::Gemma3(m))),
        Family::Llama => quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
            .map(|m| Backend::Clonable(Weights::Llama(m))),
    };
    loaded.map_err(|e| LlmError::Corrupt {
        path: path.clone(),
        reason: format!("loading the {} weights: {e}", info.architecture),
        size: info.file_size,
    })
}
