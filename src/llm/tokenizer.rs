//! The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*`), encoding exactly as
//! llama.cpp does (`llama_tokenize`), since llama.cpp is what these files are made for and what
//! we compare against:
//!
//! - the text is first cut at the vocabulary's user-defined tokens (and, when special tokens are
//!   parsed, at its control tokens), longest token first, as `tokenizer_st_partition` does; Gemma's
//!   newline and space runs are user-defined tokens, so they are matched even in plain text;
//! - `tokenizer.ggml.model = "llama"` (SentencePiece, Gemma and Llama 1-2): spaces become `▁`,
//!   then adjacent symbols are merged, highest-scoring merged piece first (ties: leftmost), and
//!   characters no piece covers become `<0xNN>` byte tokens (llama.cpp's `llm_tokenizer_spm`);
//! - `tokenizer.ggml.model = "gpt2"` (byte-level BPE, Qwen and Llama 3): the pre-tokenizer regex
//!   that `tokenizer.ggml.pre` names, then merges by rank from `tokenizer.ggml.merges`. This part
//!   runs on the `tokenizers` crate (the BPE model transformers uses too), fed the GGUF's vocab.
//!
//! A `tokenizer.json` beside the model may be used instead (`from_tokenizer_json`); then the
//! `tokenizers` crate does everything, and special tokens are its added tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use serde_json::json;

use super::gguf::GgufInfo;
use super::LlmError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// Token texts llama.cpp (the version llama-cpp-python 0.3.36 bundles) treats as end of
/// generation, forcing them to control tokens whatever the file says; Gemma 3's vocabulary has
/// `</s>` as a user-defined token, which llama.cpp therefore does not match in plain text.
pub const END_OF_GENERATION_TEXTS: [&str; 16] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
];

/// Fill-in-the-middle token texts llama.cpp also forces to control tokens; the pad, repo and
/// file-separator ones end generation too.
const FIM_TEXTS: [&str; 26] = [
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<|file_sep|>",
];
const FIM_END_OF_GENERATION: [&str; 8] = [
    "<|fim_pad|>",
    "<fim-pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<|file_sep|>",
];

/// The pre-tokenizer regexes of llama.cpp's byte-level BPE, by `tokenizer.ggml.pre`.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// `tokenizer.ggml.pre` values we tokenize like llama.cpp: (names, regex, ignore_merges).
const PRE_TOKENIZERS: [(&[&str], &str, bool); 3] = [
    (&["qwen2", "deepseek-r1-qwen", "megrez"], QWEN2_REGEX, false),
    (
        &["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"],
        LLAMA3_REGEX,
        true,
    ),
    (&["gpt-2", "phi-2", "gpt2"], GPT2_REGEX, false),
];

#[derive(Debug)]
enum Model {
    /// llama.cpp's SentencePiece merge over `tokenizer.ggml.scores`.
    Spm {
        byte_tokens: Box<[Option<u32>; 256]>,
    },
    /// Byte-level BPE through the `tokenizers` crate (no added tokens: we partition first).
    Bpe(Box<tokenizers::Tokenizer>),
    /// A tokenizer.json given beside the model: the `tokenizers` crate does it all.
    Json(Box<tokenizers::Tokenizer>),
}

/// A tokenizer built from a GGUF file's metadata (or a tokenizer.json beside it).
#[derive(Debug)]
pub struct GgufTokenizer {
    path: PathBuf,
    model: Model,
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    token_to_id: HashMap<String, u32>,
    /// Control, user-defined and unknown tokens, longest text first: the partition candidates.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    /// Ids of the end-of-generation texts present (`END_OF_GENERATION_TEXTS`, FIM pad/repo/sep).
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// A piece of the input after partitioning: raw text, or a token matched literally.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl GgufTokenizer {
    /// The tokenizer of `info`'s metadata.
    pub fn from_gguf(info: &GgufInfo) -> Result<Self, LlmError> {
        let path = info.path.clone();
        let bad = |reason: String| LlmError::Tokenizer {
            path: path.clone(),
            reason,
        };
        let tokens = string_array(info, "tokenizer.ggml.tokens").ok_or_else(|| {
            bad(
                "no tokenizer.ggml.tokens in the metadata; give a tokenizer.json beside the model"
                    .into(),
            )
        })?;
        let n = tokens.len();
        let types = match info.get("tokenizer.ggml.token_type") {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| {
                    v.to_i32()
                        .map_err(|e| bad(format!("tokenizer.ggml.token_type: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![TYPE_NORMAL; n],
        };
        let scores = match info.get("tokenizer.ggml.scores") {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| {
                    v.to_f32()
                        .map_err(|e| bad(format!("tokenizer.ggml.scores: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![0.0; n],
        };
        if types.len() != n || scores.len() != n {
            return Err(bad(format!(
                "{n} tokens but {} token types and {} scores",
                types.len(),
                scores.len()
            )));
        }
        let mut token_to_id = HashMap::with_capacity(n);
        for (id, text) in tokens.iter().enumerate() {
            // Like llama.cpp: a text present twice maps to its last id.
            token_to_id.insert(text.clone(), id as u32);
        }
        let mut types = types;
        let mut eog = Vec::new();
        for text in END_OF_GENERATION_TEXTS.iter().chain(FIM_TEXTS.iter()) {
            if let Some(&id) = token_to_id.get(*text) {
                types[id as usize] = TYPE_CONTROL;
                let ends =
                    END_OF_GENERATION_TEXTS.contains(text) || FIM_END_OF_GENERATION.contains(text);
                if ends && !eog.contains(&id) {
                    eog.push(id);
                }
            }
        }
        let kind = info.get_str("tokenizer.ggml.model").unwrap_or("llama");
        let id_key = |key: &str| {
            info.get_u64(key)
                .map(|id| id as u32)
                .filter(|id| (*id as usize) < n)
        };
        let (model, defaults) = match kind {
            "llama" => {
                let mut byte_tokens = Box::new([None; 256]);
                for (byte, slot) in byte_tokens.iter_mut().enumerate() {
                    *slot = token_to_id.get(&format!("<0x{byte:02X}>")).copied();
                }
                // llama.cpp's SPM defaults: bos 1, eos 2, a BOS added, a space prefix.
                (Model::Spm { byte_tokens }, (Some(1), Some(2), true, true))
            }
            "gpt2" => {
                let pre = info.get_str("tokenizer.ggml.pre").unwrap_or("default");
                let (regex, ignore_merges) = PRE_TOKENIZERS
                    .iter()
                    .find(|(names, _, _)| names.contains(&pre))
                    .map(|(_, regex, ignore)| (*regex, *ignore))
                    .ok_or_else(|| {
                        bad(format!(
                            "the byte-level BPE pre-tokenizer {pre:?} (tokenizer.ggml.pre) is not \
                             supported; supported: {}; give a tokenizer.json beside the model",
                            PRE_TOKENIZERS
                                .iter()
                                .flat_map(|(names, _, _)| names.iter().copied())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                let merges = string_array(info, "tokenizer.ggml.merges")
                    .ok_or_else(|| bad("a gpt2 tokenizer without tokenizer.ggml.merges".into()))?;
                let llama3 = ignore_merges;
                let tokenizer = bpe_tokenizer(&token_to_id, &merges, regex, ignore_merges)
                    .map_err(|e| bad(format!("building the BPE tokenizer: {e}")))?;
                // llama.cpp: no BOS for BPE models unless the pre-tokenizer is Llama 3's.
                (
                    Model::Bpe(Box::new(tokenizer)),
                    (Some(11), Some(11), llama3, false),
                )
            }
            other => {
                return Err(bad(format!(
                    "the tokenizer model {other:?} (tokenizer.ggml.model) is not supported; \
                     supported: llama (SentencePiece), gpt2 (byte-level BPE); give a \
                     tokenizer.json beside the model"
                )))
            }
        };
        let (default_bos, default_eos, default_add_bos, default_space_prefix) = defaults;
        let bos = match info.get("tokenizer.ggml.bos_token_id") {
            Some(_) => id_key("tokenizer.ggml.bos_token_id"),
            None => default_bos.filter(|id| (*id as usize) < n),
        };
        let eos = match info.get("tokenizer.ggml.eos_token_id") {
            Some(_) => id_key("tokenizer.ggml.eos_token_id"),
            None => default_eos.filter(|id| (*id as usize) < n),
        };
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|id| {
                matches!(
                    types[*id as usize],
                    TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN
                ) && !tokens[*id as usize].is_empty()
            })
            .collect();
        specials.sort_by(|a, b| {
            tokens[*b as usize]
                .len()
                .cmp(&tokens[*a as usize].len())
                .then(a.cmp(b))
        });
        Ok(Self {
            add_bos: info
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(default_add_bos),
            add_eos: info
                .get_bool("tokenizer.ggml.add_eos_token")
                .unwrap_or(false),
            add_space_prefix: info
                .get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(default_space_prefix && kind == "llama"),
            path,
            model,
            tokens,
            types,
            scores,
            token_to_id,
            specials,
            bos,
            eos,
            eog,
        })
    }

    /// A `tokenizer.json` (Hugging Face format) used instead of the GGUF's own tokenizer; the
    /// GGUF still gives the special ids, BOS and EOS. For GGUFs whose tokenizer we cannot
    /// rebuild (an unsupported pre-tokenizer) and repos that ship one.
    pub fn from_tokenizer_json(info: &GgufInfo, json_path: &Path) -> Result<Self, LlmError> {
        let bad = |reason: String| LlmError::Tokenizer {
            path: json_path.to_path_buf(),
            reason,
        };
        let tokenizer = tokenizers::Tokenizer::from_file(json_path)
            .map_err(|e| bad(format!("not a usable tokenizer.json: {e}")))?;
        let mut base = match Self::from_gguf(info) {
            Ok(base) => base,
            Err(_) => {
                // Only the vocabulary of tokenizer.json: ids from it, special ids from the GGUF.
                let vocab = tokenizer.get_vocab(true);
                let n = vocab.values().map(|id| *id as usize + 1).max().unwrap_or(0);
                let mut tokens = vec![String::new(); n];
                for (text, id) in &vocab {
                    tokens[*id as usize] = text.clone();
                }
                let mut types = vec![TYPE_NORMAL; n];
                for (id, added) in tokenizer.get_added_tokens_decoder() {
                    if (id as usize) < n {
                        types[id as usize] = if added.special {
                            TYPE_CONTROL
                        } else {
                            TYPE_USER_DEFINED
                        };
                    }
                }
                let id = |key: &str| info.get_u64(key).map(|id| id as u32);
                Self {
                    path: json_path.to_path_buf(),
                    model: Model::Spm {
                        byte_tokens: Box::new([None; 256]),
                    },
                    token_to_id: vocab,
                    scores: vec![0.0; n],
                    tokens,
                    types,
                    specials: Vec::new(),
                    eog: Vec::new(),
                    bos: id("tokenizer.ggml.bos_token_id"),
                    eos: id("tokenizer.ggml.eos_token_id"),
                    add_bos: info
                        .get_bool("tokenizer.ggml.add_bos_token")
                        .unwrap_or(false),
                    add_eos: false,
                    add_space_prefix: false,
                }
            }
        };
        base.path = json_path.to_path_buf();
        base.model = Model::Json(Box::new(tokenizer));
        Ok(base)
    }

    /// The ids of `text` as llama.cpp's `llama_tokenize(text, add_special, parse_special)` gives
    /// them: `add_special` adds BOS (and EOS) where the model asks for them; `parse_special`
    /// turns control-token texts such as `<start_of_turn>` into their ids (wanted for rendered
    /// chat templates, not for user text).
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, LlmError> {
        let mut ids = Vec::new();
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        if let Model::Json(tokenizer) = &self.model {
            let encoding = tokenizer
                .encode(text, false)
                .map_err(|e| self.error(format!("tokenizing: {e}")))?;
            ids.extend_from_slice(encoding.get_ids());
        } else if !text.is_empty() {
            // llama.cpp makes no fragment of an empty text (so no space prefix either).
            let mut previous_special = true;
            for fragment in self.partition(text, parse_special) {
                match fragment {
                    Fragment::Token(id) => {
                        ids.push(id);
                        previous_special = true;
                    }
                    Fragment::Text(raw) => {
                        self.encode_raw(raw, previous_special, &mut ids)?;
                        previous_special = false;
                    }
                }
            }
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The ids of a rendered chat prompt: special tokens parsed, and BOS added only when the
    /// template did not already write it (most do, as `{{ bos_token }}`).
    pub fn encode_prompt(&self, rendered: &str) -> Result<Vec<u32>, LlmError> {
        let starts_with_bos = self
            .bos
            .map(|bos| rendered.starts_with(self.tokens[bos as usize].as_str()))
            .unwrap_or(false);
        self.encode(rendered, !starts_with_bos, true)
    }

    /// The text of `ids` as llama.cpp's `llama_detokenize` gives it without special tokens:
    /// control and unknown tokens skipped, byte tokens put back together into UTF-8, and (for
    /// SentencePiece models that add a space prefix) the first piece's leading space dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        if let Model::Json(tokenizer) = &self.model {
            return tokenizer.decode(ids, true).unwrap_or_default();
        }
        let mut remove_space = self.add_space_prefix;
        for id in ids {
            let start = bytes.len();
            self.piece_bytes(*id, &mut bytes);
            if remove_space && bytes.len() > start {
                if bytes[start] == b' ' {
                    bytes.remove(start);
                }
                remove_space = false;
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes one token stands for (a byte token can be half a character).
    pub fn piece_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let Some(text) = self.tokens.get(id as usize) else {
            return;
        };
        match self.types[id as usize] {
            TYPE_USER_DEFINED => out.extend_from_slice(text.as_bytes()),
            TYPE_NORMAL => match &self.model {
                Model::Spm { .. } => out.extend_from_slice(text.replace('▁', " ").as_bytes()),
                _ => out.extend(text.chars().map(|c| byte_level_byte(c).unwrap_or(b'?'))),
            },
            TYPE_BYTE => {
                if let Some(byte) = text
                    .strip_prefix("<0x")
                    .and_then(|t| t.strip_suffix('>'))
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    out.push(byte);
                }
            }
            _ => {}
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The text of one token as the vocabulary stores it.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token's exact vocabulary text, e.g. `<end_of_turn>`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The vocabulary's end-of-generation tokens by text, as llama.cpp finds them (besides
    /// EOS and `tokenizer.ggml.eot_token_id`, which the model adds).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether a token is a control token (`<eos>`, `<|im_end|>`): never shown in text.
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TYPE_CONTROL)
    }

    fn error(&self, reason: String) -> LlmError {
        LlmError::Tokenizer {
            path: self.path.clone(),
            reason,
        }
    }

    /// llama.cpp's `tokenizer_st_partition`: every occurrence of each special token, longest
    /// first, is cut out of the raw text, left to right. Control and unknown tokens only when
    /// `parse_special`.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let kind = self.types[id as usize];
            if !parse_special && (kind == TYPE_CONTROL || kind == TYPE_UNKNOWN) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                let Fragment::Text(mut raw) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = raw.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&raw[..at]));
                    }
                    next.push(Fragment::Token(id));
                    raw = &raw[at + needle.len()..];
                }
                if !raw.is_empty() {
                    next.push(Fragment::Text(raw));
                }
            }
            fragments = next;
        }
        fragments
    }

    fn encode_raw(
        &self,
        raw: &str,
        previous_special: bool,
        ids: &mut Vec<u32>,
    ) -> Result<(), LlmError> {
        match &self.model {
            Model::Spm { byte_tokens } => {
                let mut text = String::with_capacity(raw.len() + 3);
                if self.add_space_prefix && previous_special {
                    text.push(' ');
                }
                text.push_str(raw);
                let text = text.replace(' ', "▁");
                self.spm_merge(&text, byte_tokens, ids);
                Ok(())
            }
            Model::Bpe(tokenizer) => {
                let encoding = tokenizer
                    .encode(raw, false)
                    .map_err(|e| self.error(format!("tokenizing: {e}")))?;
                ids.extend_from_slice(encoding.get_ids());
                Ok(())
            }
            Model::Json(_) => unreachable!("tokenizer.json inputs are encoded whole"),
        }
    }

    /// llama.cpp's `llm_tokenizer_spm_session::tokenize`: characters merged pairwise, the pair
    /// whose joined text is the highest-scoring vocabulary piece first (ties: leftmost).
    fn spm_merge(&self, text: &str, byte_tokens: &[Option<u32>; 256], ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        // Symbols: byte ranges into `text`, linked left and right; a merged-away one has n = 0.
        let mut starts = Vec::new();
        let mut lens = Vec::new();
        for (start, c) in text.char_indices() {
            starts.push(start);
            lens.push(c.len_utf8());
        }
        let count = starts.len();
        let mut prev: Vec<isize> = (0..count as isize).map(|i| i - 1).collect();
        let mut next: Vec<isize> = (0..count as isize)
            .map(|i| if i + 1 == count as isize { -1 } else { i + 1 })
            .collect();
        let mut queue = BinaryHeap::new();
        let try_add =
            |left: isize, right: isize, lens: &[usize], queue: &mut BinaryHeap<Bigram>| {
                if left < 0 || right < 0 {
                    return;
                }
                let (left, right) = (left as usize, right as usize);
                let joined = &text[starts[left]..starts[left] + lens[left] + lens[right]];
                let Some(&id) = self.token_to_id.get(joined) else {
                    return;
                };
                queue.push(Bigram {
                    score: self.scores[id as usize],
                    left,
                    right,
                    size: joined.len(),
                });
            };
        for i in 1..count {
            try_add(i as isize - 1, i as isize, &lens, &mut queue);
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (bigram.left, bigram.right);
            if lens[l] == 0 || lens[r] == 0 || lens[l] + lens[r] != bigram.size {
                continue;
            }
            lens[l] += lens[r];
            lens[r] = 0;
            next[l] = next[r];
            if next[r] >= 0 {
                prev[next[r] as usize] = l as isize;
            }
            try_add(prev[l], l as isize, &lens, &mut queue);
            try_add(l as isize, next[l], &lens, &mut queue);
        }
        // Every merged symbol is a vocabulary piece (a pair is queued only if its text is one),
        // so llama.cpp's `resegment` reduces to: the piece's id, else (a lone character the
        // vocabulary lacks) its UTF-8 bytes as byte tokens.
        let mut i = 0isize;
        while i >= 0 {
            let at = i as usize;
            let piece = &text[starts[at]..starts[at] + lens[at]];
            match self.token_to_id.get(piece) {
                Some(&id) => ids.push(id),
                None => ids.extend(piece.bytes().filter_map(|b| byte_tokens[b as usize])),
            }
            i = next[at];
        }
    }
}

/// A candidate merge in the SPM queue: highest score first, then the leftmost.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

fn string_array(info: &GgufInfo, key: &str) -> Option<Vec<String>> {
    match info.get(key)? {
        Value::Array(values) => values.iter().map(|v| v.to_string().ok().cloned()).collect(),
        _ => None,
    }
}

/// GPT-2's byte-to-character table, inverted: which byte a byte-level BPE character stands for.
fn byte_level_byte(c: char) -> Option<u8> {
    let code = c as u32;
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    if code < 256 && printable(code) {
        return Some(code as u8);
    }
    // The other 68 bytes were mapped in order onto 256, 257, ...
    let index = code.checked_sub(256)?;
    (0u32..256)
        .filter(|b| !printable(*b))
        .nth(index as usize)
        .map(|b| b as u8)
}

/// The byte-level BPE pipeline llama.cpp's gpt2 tokenizer amounts to, as the `tokenizers`
/// crate's JSON: Split(regex, isolated) then ByteLevel (no regex of its own), BPE with the
/// GGUF's vocab and merges.
fn bpe_tokenizer(
    vocab: &HashMap<String, u32>,
    merges: &[String],
    regex: &str,
    ignore_merges: bool,
) -> Result<tokenizers::Tokenizer, String> {
    let value = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
            ]
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        }
    });
    let text = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    text.parse::<tokenizers::Tokenizer>()
        .map_err(|e| e.to_string())
}
