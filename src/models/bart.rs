//! The BART family: Marian, BART and mBART, one module with the family's differences as flags
//! (transformers keeps three copies of the same layers):
//!
//! | | positions | embedding norm | norm order | final norms |
//! |---|---|---|---|---|
//! | marian | sinusoidal | no | post-norm | no |
//! | bart | learned, offset 2 | yes | post-norm | no |
//! | mbart | learned, offset 2 | yes | pre-norm | yes |
//!
//! Everything else (sizes, activation, embedding scale, shared or separate decoder vocabulary,
//! tied or own output head, final_logits_bias) comes from config.json and the weight file.

use candle_core::{DType, Device, Module, Result, Tensor};

use super::common::{
    activation, check_length, padding_bias, AttentionNames, AttentionShape, CrossAttention,
    DecoderCache, EmbeddingMemo, FeedForward, HalfClamp, Layer, Norm, OutputHead, SelfAttention,
    Stack, StackStyle,
};
use super::config::{ConfigFile, ModelConfig, ModelType};
use super::linear::TokenTable;
use super::weights::Weights;
use super::{ModelError, Side};
use crate::seq2seq::SpecialTokens;

/// transformers' nn.LayerNorm default.
const LAYER_NORM_EPS: f64 = 1e-5;

const ATTENTION: AttentionNames = AttentionNames {
    q: "q_proj",
    k: "k_proj",
    v: "v_proj",
    out: "out_proj",
};

/// What distinguishes the three members of the family.
#[derive(Debug, Clone, Copy)]
struct Flavor {
    sinusoidal_positions: bool,
    embedding_norm: bool,
    pre_norm: bool,
    /// How encoder layers clamp f16 hidden states (decoder layers never do, as in transformers).
    encoder_clamp: HalfClamp,
}

impl Flavor {
    fn of(model_type: ModelType) -> Self {
        let mbart = model_type == ModelType::MBart;
        Self {
            sinusoidal_positions: model_type == ModelType::Marian,
            embedding_norm: model_type != ModelType::Marian,
            pre_norm: mbart,
            encoder_clamp: if mbart {
                HalfClamp::Layer
            } else {
                HalfClamp::LayerOnNonFinite
            },
        }
    }
}

/// A position table: row `position + offset` embeds `position`.
struct Positions {
    table: Tensor,
    offset: usize,
}

impl Positions {
    /// Marian's sinusoids: sines in the first half of each row, cosines in the second
    /// (computed in f64 like transformers' numpy code, then rounded).
    fn sinusoidal(n_pos: usize, dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        let sines = dim.div_ceil(2);
        let mut data = vec![0f32; n_pos * dim];
        for pos in 0..n_pos {
            let row = &mut data[pos * dim..(pos + 1) * dim];
            for j in 0..dim {
                let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
                if j % 2 == 0 {
                    row[j / 2] = angle.sin() as f32;
                } else {
                    row[sines + j / 2] = angle.cos() as f32;
                }
            }
        }
        let table = Tensor::from_vec(data, (n_pos, dim), device)?.to_dtype(dtype)?;
        Ok(Self { table, offset: 0 })
    }

    fn learned(
        w: &Weights,
        name: &str,
        n_pos: usize,
        dim: usize,
    ) -> std::result::Result<Self, ModelError> {
        const OFFSET: usize = 2;
        let table = w.get(name, (n_pos + OFFSET, dim))?;
        Ok(Self {
            table,
            offset: OFFSET,
        })
    }

    /// Rows for positions `start..start + len`.
    fn rows(&self, start: usize, len: usize) -> Result<Tensor> {
        self.table.narrow(0, start + self.offset, len)
    }
}

/// Token embedding, position embedding and (BART, mBART) layer norm of one side.
struct Embedder {
    tokens: TokenTable,
    scale: f64,
    positions: Positions,
    /// Positions the table covers (max_position_embeddings).
    limit: usize,
    norm: Option<Norm>,
}

impl Embedder {
    /// `ids`: (batch, len) starting at position `start`; returns (batch, len, d_model).
    fn forward(&self, ids: &Tensor, start: usize, side: Side) -> Result<Tensor> {
        let len = ids.dim(1)?;
        check_length(start + len, Some(self.limit), side)?;
        let x = self.tokens.forward(ids)?;
        let x = if self.scale == 1.0 {
            x
        } else {
            x.affine(self.scale, 0.0)?
        };
        let x = x.broadcast_add(&self.positions.rows(start, len)?)?;
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

/// The sizes of one stack, read from config.json.
struct StackSizes {
    layers: usize,
    heads: usize,
    ffn: usize,
}

impl StackSizes {
    fn read(cfg: &ConfigFile, side: &str) -> std::result::Result<Self, ModelError> {
        Ok(Self {
            layers: cfg.usize(&format!("{side}_layers"))?,
            heads: cfg.positive(&format!("{side}_attention_heads"))?,
            ffn: cfg.positive(&format!("{side}_ffn_dim"))?,
        })
    }
}

/// A Marian, BART or mBART model.
pub struct BartModel {
    model_type: ModelType,
    encoder_embed: Embedder,
    encoder: Stack,
    decoder_embed: Embedder,
    decoder: Stack,
    head: OutputHead,
    special: SpecialTokens,
    max_positions: usize,
}

impl BartModel {
    pub fn load(config: &ModelConfig, w: &Weights) -> std::result::Result<Self, ModelError> {
        let cfg = &config.config;
        let flavor = Flavor::of(config.model_type);
        let d_model = cfg.positive("d_model")?;
        let max_positions = cfg.positive("max_position_embeddings")?;
        let act_name = cfg.str("activation_function")?;
        let act = activation(act_name).ok_or_else(|| ModelError::BadConfig {
            file: cfg.path().to_path_buf(),
            field: "activation_function".into(),
            problem: format!(
                "`{act_name}` is not supported (relu, gelu, gelu_new, swish/silu are)"
            ),
        })?;
        // Hugging Face checkpoints of the generation model prefix everything with `model.`.
        let p = if w.contains("model.encoder.layers.0.fc1.weight")
            || w.contains("model.shared.weight")
        {
            "model."
        } else {
            ""
        };
        let vocab = cfg.positive("vocab_size")?;
        let decoder_vocab = match config.model_type {
            ModelType::Marian => cfg.opt_usize("decoder_vocab_size")?.unwrap_or(vocab),
            _ => vocab,
        };
        let shared = config.model_type != ModelType::Marian
            || cfg.bool("share_encoder_decoder_embeddings")?;
        let full = |n: &str| format!("{p}{n}");
        let (enc, dec, shared_name) = (
            full("encoder.embed_tokens.weight"),
            full("decoder.embed_tokens.weight"),
            full("shared.weight"),
        );
        // As transformers 5 loads them: every matrix as stored; one the file lacks takes the
        // matrix it is tied to (`_tied_weights_keys`: the embeddings and the output layer to
        // `shared` when the vocabulary is shared, else the output layer to the decoder's
        // embeddings). Tied matrices stored with different values stay apart (some opus-mt
        // tc-big checkpoints hold an output layer of their own), whatever the tie flags say.
        let (enc_names, dec_names, head_source) = if shared {
            (
                [enc.as_str(), &shared_name, &dec].to_vec(),
                [dec.as_str(), &shared_name, &enc].to_vec(),
                [shared_name.as_str(), &dec, &enc].to_vec(),
            )
        } else {
            (
                [enc.as_str(), &shared_name].to_vec(),
                [dec.as_str()].to_vec(),
                [dec.as_str()].to_vec(),
            )
        };
        let mut memo = EmbeddingMemo::new(w);
        let enc_tokens = memo.get(&enc_names, (vocab, d_model))?;
        let dec_tokens = memo.get(&dec_names, (decoder_vocab, d_model))?;
        // With `tie_word_embeddings: false` transformers ties nothing: the file must hold the
        // output layer. (It ties no embedding either, and would leave one the file lacks
        // randomly initialized; mtsum takes `shared` for it, as Marian itself means.)
        let mut head_names = vec!["lm_head.weight"];
        if cfg.opt_bool("tie_word_embeddings")?.unwrap_or(true) {
            head_names.extend(head_source);
        }
        // The output layer is packed first: when it is tied, the embedding tables then share its
        // packed copy and the unpacked matrix is freed before the layers load.
        let head = memo.get(&head_names, (decoder_vocab, d_model))?;
        drop(memo);
        let bias = w
            .contains("final_logits_bias")
            .then(|| w.get("final_logits_bias", (1, decoder_vocab)))
            .transpose()?;
        let head = OutputHead::new(head, bias, w.precision())?;

        let scale = if cfg.bool("scale_embedding")? {
            (d_model as f64).sqrt()
        } else {
            1.0
        };
        let embedder =
            |side: &str, tokens: TokenTable| -> std::result::Result<Embedder, ModelError> {
                let positions = if flavor.sinusoidal_positions {
                    Positions::sinusoidal(max_positions, d_model, w.dtype(), w.device())?
                } else {
                    Positions::learned(
                        w,
                        &format!("{p}{side}.embed_positions.weight"),
                        max_positions,
                        d_model,
                    )?
                };
                let norm = flavor
                    .embedding_norm
                    .then(|| {
                        Norm::layer(
                            w,
                            &format!("{p}{side}.layernorm_embedding"),
                            d_model,
                            LAYER_NORM_EPS,
                        )
                    })
                    .transpose()?;
                Ok(Embedder {
                    tokens,
                    scale,
                    positions,
                    limit: max_positions,
                    norm,
                })
            };
        let encoder_embed = embedder("encoder", TokenTable::new(enc_tokens, head.linear())?)?;
        let decoder_embed = embedder("decoder", TokenTable::new(dec_tokens, head.linear())?)?;
        let encoder = load_stack(w, cfg, &format!("{p}encoder"), d_model, act, flavor)?;
        let decoder = load_stack(w, cfg, &format!("{p}decoder"), d_model, act, flavor)?;
        Ok(Self {
            model_type: config.model_type,
            encoder_embed,
            encoder,
            decoder_embed,
            decoder,
            head,
            special: config.special_tokens()?,
            max_positions,
        })
    }

    pub fn model_type(&self) -> ModelType {
        self.model_type
    }

    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = self.encoder_embed.forward(ids, 0, Side::Source)?;
        let bias = padding_bias(mask, x.dtype())?;
        self.encoder.encode(x, &[&bias])
    }

    pub fn start_decoding(&self, encoded: &Tensor, mask: &Tensor) -> Result<DecoderCache> {
        DecoderCache::new(&self.decoder, encoded, mask)
    }

    pub fn decode_step(&self, last: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        self.head.logits(&self.decode_hidden(last, cache)?)
    }

    /// One decoder step up to the output layer: the (rows, d_model) rows it takes.
    pub fn decode_hidden(&self, last: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let ids = last.unsqueeze(1)?;
        let x = self
            .decoder_embed
            .forward(&ids, cache.position(), Side::Target)?;
        self.decoder.step(x, None, cache)?.squeeze(1)
    }

    pub fn head(&self) -> &OutputHead {
        &self.head
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn vocab_size(&self) -> usize {
        self.head.vocab_size()
    }

    pub fn max_source_positions(&self) -> usize {
        self.max_positions
    }
}

/// The encoder (`prefix` = ...encoder) or decoder stack, with cross-attention in the decoder.
fn load_stack(
    w: &Weights,
    cfg: &ConfigFile,
    prefix: &str,
    d_model: usize,
    act: candle_nn::Activation,
    flavor: Flavor,
) -> std::result::Result<Stack, ModelError> {
    let side = if prefix.ends_with("decoder") {
        "decoder"
    } else {
        "encoder"
    };
    let sizes = StackSizes::read(cfg, side)?;
    if !d_model.is_multiple_of(sizes.heads) {
        return Err(ModelError::BadConfig {
            file: cfg.path().to_path_buf(),
            field: format!("{side}_attention_heads"),
            problem: format!(
                "d_model {d_model} is not divisible by {} heads",
                sizes.heads
            ),
        });
    }
    let head_dim = d_model / sizes.heads;
    let shape = AttentionShape {
        d_model,
        heads: sizes.heads,
        head_dim,
        bias: true,
        query_scale: (head_dim as f64).powf(-0.5),
    };
    let norm = |name: String| Norm::layer(w, &name, d_model, LAYER_NORM_EPS);
    let layers = (0..sizes.layers)
        .map(|i| {
            let l = format!("{prefix}.layers.{i}");
            let cross = (side == "decoder")
                .then(|| -> std::result::Result<_, ModelError> {
                    Ok((
                        CrossAttention::load(w, &format!("{l}.encoder_attn"), &ATTENTION, shape)?,
                        norm(format!("{l}.encoder_attn_layer_norm"))?,
                    ))
                })
                .transpose()?;
            Ok(Layer {
                self_attn: SelfAttention::load(w, &format!("{l}.self_attn"), &ATTENTION, shape)?,
                self_norm: norm(format!("{l}.self_attn_layer_norm"))?,
                cross,
                ffn: FeedForward::load(
                    w,
                    &l,
                    &["fc1"],
                    "fc2",
                    (d_model, sizes.ffn),
                    true,
                    act,
                    None,
                )?,
                ffn_norm: norm(format!("{l}.final_layer_norm"))?,
            })
        })
        .collect::<std::result::Result<Vec<_>, ModelError>>()?;
    let final_norm = flavor
        .pre_norm
        .then(|| norm(format!("{prefix}.layer_norm")))
        .transpose()?;
    let clamp = match side {
        "encoder" => flavor.encoder_clamp,
        _ => HalfClamp::Never,
    };
    Ok(Stack {
        layers,
        final_norm,
        style: StackStyle {
            pre_norm: flavor.pre_norm,
            clamp,
        },
    })
}
