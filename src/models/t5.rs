//! T5 and mT5: relative position buckets (bidirectional in the encoder, causal in the decoder)
//! added to unscaled attention scores, RMS layer norms before every sublayer, a relu or gated
//! feed-forward block (`feed_forward_proj`), and an output head that is `lm_head.weight` when
//! the checkpoint has one, else the shared embedding.
//!
//! As in transformers 5.x, T5 (not mT5) multiplies the decoder output by d_model^-0.5 before
//! the head when config.json says `"scale_decoder_outputs": true`, or, without that key, unless
//! it says `"tie_word_embeddings": false`.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::Embedding;

use super::common::{
    activation, padding_bias, AttentionNames, AttentionShape, CrossAttention, DecoderCache,
    EmbeddingMemo, FeedForward, HalfClamp, Layer, Norm, OutputHead, SelfAttention, Stack,
    StackStyle,
};
use super::config::{ModelConfig, ModelType};
use super::linear::TokenTable;
use super::weights::Weights;
use super::ModelError;
use crate::seq2seq::SpecialTokens;

const SELF_ATTENTION: AttentionNames = AttentionNames {
    q: "q",
    k: "k",
    v: "v",
    out: "o",
};

/// T5's learned bias per head for each bucket of relative distance.
struct RelativeBias {
    table: Embedding,
    buckets: usize,
    max_distance: usize,
    bidirectional: bool,
}

impl RelativeBias {
    /// The bucket of `relative = key_position - query_position`, computed with the same f32
    /// operations as transformers' `_relative_position_bucket` so boundaries fall alike.
    fn bucket(&self, relative: i64) -> u32 {
        let mut buckets = self.buckets as i64;
        let mut base = 0i64;
        let distance = if self.bidirectional {
            buckets /= 2;
            if relative > 0 {
                base = buckets;
            }
            relative.abs()
        } else {
            (-relative).max(0)
        };
        let max_exact = buckets / 2;
        let offset = if distance < max_exact {
            distance
        } else {
            let ratio = (distance as f32 / max_exact as f32).ln()
                / ((self.max_distance as f64 / max_exact as f64).ln() as f32)
                * (buckets - max_exact) as f32;
            (max_exact + ratio as i64).min(buckets - 1)
        };
        (base + offset) as u32
    }

    /// (1, heads, queries, keys) for query positions `queries` and keys `0..keys`.
    fn bias(
        &self,
        queries: std::ops::Range<usize>,
        keys: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let q_len = queries.len();
        let ids: Vec<u32> = queries
            .flat_map(|q| (0..keys).map(move |k| self.bucket(k as i64 - q as i64)))
            .collect();
        let ids = Tensor::from_vec(ids, (q_len, keys), device)?;
        // (q, k, heads) -> (1, heads, q, k)
        self.table
            .forward(&ids)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()
    }
}

/// A T5 or mT5 model.
pub struct T5Model {
    model_type: ModelType,
    embed: TokenTable,
    decoder_embed: TokenTable,
    encoder: Stack,
    encoder_positions: RelativeBias,
    decoder: Stack,
    decoder_positions: RelativeBias,
    /// d_model^-0.5 for T5 with a tied head, else 1.
    output_scale: f64,
    head: OutputHead,
    special: SpecialTokens,
}

impl T5Model {
    pub fn load(config: &ModelConfig, w: &Weights) -> std::result::Result<Self, ModelError> {
        let cfg = &config.config;
        let d_model = cfg.positive("d_model")?;
        let heads = cfg.positive("num_heads")?;
        let head_dim = cfg.positive("d_kv")?;
        let d_ff = cfg.positive("d_ff")?;
        let vocab = cfg.positive("vocab_size")?;
        let eps = cfg.f64("layer_norm_epsilon")?;
        let encoder_layers = cfg.usize("num_layers")?;
        let decoder_layers = cfg
            .opt_usize("num_decoder_layers")?
            .unwrap_or(encoder_layers);
        let (gated, act) = feed_forward_kind(cfg)?;
        let shape = AttentionShape {
            d_model,
            heads,
            head_dim,
            bias: false,
            query_scale: 1.0,
        };
        let relative =
            |side: &str, bidirectional| -> std::result::Result<RelativeBias, ModelError> {
                let buckets = cfg.positive("relative_attention_num_buckets")?;
                let name =
                    format!("{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
                Ok(RelativeBias {
                    table: Embedding::new(w.get(&name, (buckets, heads))?, heads),
                    buckets,
                    max_distance: cfg.positive("relative_attention_max_distance")?,
                    bidirectional,
                })
            };
        // transformers' `_keep_in_fp32_modules = ["wo"]`: under f16 (not bf16, whose range is
        // f32's) `wo` stays f32, since T5 v1.1 / mT5 feed-forward outputs exceed f16's range.
        let wo_dtype = (w.dtype() == DType::F16).then_some(DType::F32);
        let ffn = |prefix: &str| {
            let up: &[&str] = if gated { &["wi_0", "wi_1"] } else { &["wi"] };
            FeedForward::load(
                w,
                &format!("{prefix}.DenseReluDense"),
                up,
                "wo",
                (d_model, d_ff),
                false,
                act,
                wo_dtype,
            )
        };
        let norm = |prefix: &str| Norm::rms(w, &format!("{prefix}.layer_norm"), d_model, eps);
        let stack = |side: &str, count: usize| -> std::result::Result<Stack, ModelError> {
            let decoder = side == "decoder";
            let layers = (0..count)
                .map(|i| {
                    let b = format!("{side}.block.{i}.layer");
                    let cross = decoder
                        .then(|| -> std::result::Result<_, ModelError> {
                            let prefix = format!("{b}.1");
                            Ok((
                                CrossAttention::load(
                                    w,
                                    &format!("{prefix}.EncDecAttention"),
                                    &SELF_ATTENTION,
                                    shape,
                                )?,
                                norm(&prefix)?,
                            ))
                        })
                        .transpose()?;
                    let ffn_prefix = format!("{b}.{}", if decoder { 2 } else { 1 });
                    Ok(Layer {
                        self_attn: SelfAttention::load(
                            w,
                            &format!("{b}.0.SelfAttention"),
                            &SELF_ATTENTION,
                            shape,
                        )?,
                        self_norm: norm(&format!("{b}.0"))?,
                        cross,
                        ffn: ffn(&ffn_prefix)?,
                        ffn_norm: norm(&ffn_prefix)?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, ModelError>>()?;
            Ok(Stack {
                layers,
                final_norm: Some(Norm::rms(
                    w,
                    &format!("{side}.final_layer_norm"),
                    d_model,
                    eps,
                )?),
                style: StackStyle {
                    pre_norm: true,
                    clamp: HalfClamp::SublayerOnInf,
                },
            })
        };
        // As transformers 5 loads them (`_tied_weights_keys`): each matrix as stored, one the
        // file lacks taken from `shared.weight` (or from what the file has in its place); tied
        // matrices stored with different values stay apart.
        let mut memo = EmbeddingMemo::new(w);
        let (enc, dec, shared) = (
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "shared.weight",
        );
        let embed = memo.get(&[enc, shared, dec], (vocab, d_model))?;
        let decoder_embed = memo.get(&[dec, shared, enc], (vocab, d_model))?;
        let head = memo.get(&["lm_head.weight", shared, dec, enc], (vocab, d_model))?;
        drop(memo);
        // A tied head's packed copy serves the embedding lookups too (see `TokenTable`).
        let head = OutputHead::new(head, None, w.precision())?;
        let embed = TokenTable::new(embed, head.linear())?;
        let decoder_embed = TokenTable::new(decoder_embed, head.linear())?;
        let scales_output = config.model_type == ModelType::T5
            && match cfg.opt_bool("scale_decoder_outputs")? {
                Some(scale) => scale,
                None => cfg.opt_bool("tie_word_embeddings")? != Some(false),
            };
        Ok(Self {
            model_type: config.model_type,
            embed,
            decoder_embed,
            encoder: stack("encoder", encoder_layers)?,
            encoder_positions: relative("encoder", true)?,
            decoder: stack("decoder", decoder_layers)?,
            decoder_positions: relative("decoder", false)?,
            output_scale: if scales_output {
                (d_model as f64).powf(-0.5)
            } else {
                1.0
            },
            head,
            special: config.special_tokens()?,
        })
    }

    pub fn model_type(&self) -> ModelType {
        self.model_type
    }

    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let len = ids.dim(1)?;
        let x = self.embed.forward(ids)?;
        let positions = self
            .encoder_positions
            .bias(0..len, len, x.device())?
            .to_dtype(x.dtype())?;
        let padding = padding_bias(mask, x.dtype())?;
        self.encoder.encode(x, &[&positions, &padding])
    }

    pub fn start_decoding(&self, encoded: &Tensor, mask: &Tensor) -> Result<DecoderCache> {
        DecoderCache::new(&self.decoder, encoded, mask)
    }

    pub fn decode_step(&self, last: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        self.head.logits(&self.decode_hidden(last, cache)?)
    }

    pub fn head(&self) -> &OutputHead {
        &self.head
    }

    /// One decoder step up to the output layer: the (rows, d_model) rows it takes (scaled for
    /// a tied head).
    pub fn decode_hidden(&self, last: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let position = cache.position();
        let x = self.decoder_embed.forward(&last.unsqueeze(1)?)?;
        let self_bias = self
            .decoder_positions
            .bias(position..position + 1, position + 1, x.device())?
            .to_dtype(x.dtype())?;
        let hidden = self.decoder.step(x, Some(&self_bias), cache)?.squeeze(1)?;
        let hidden = if self.output_scale == 1.0 {
            hidden
        } else {
            hidden.affine(self.output_scale, 0.0)?
        };
        Ok(hidden)
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn vocab_size(&self) -> usize {
        self.head.vocab_size()
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
}

/// `feed_forward_proj`: `ACT` or `gated-ACT`; `gated-gelu` means the tanh approximation.
fn feed_forward_kind(
    cfg: &super::config::ConfigFile,
) -> std::result::Result<(bool, candle_nn::Activation), ModelError> {
    let proj = cfg.str("feed_forward_proj")?;
    let bad = |problem: String| ModelError::BadConfig {
        file: cfg.path().to_path_buf(),
        field: "feed_forward_proj".into(),
        problem,
    };
    let (gated, name) = match proj.split('-').collect::<Vec<_>>().as_slice() {
        [act] => (false, *act),
        ["gated", act] => (true, *act),
        _ => return Err(bad(format!("`{proj}` is not `ACT` or `gated-ACT`"))),
    };
    let name = if proj == "gated-gelu" {
        "gelu_new"
    } else {
        name
    };
    let act =
        activation(name).ok_or_else(|| bad(format!("activation `{name}` is not supported")))?;
    Ok((gated, act))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative(bidirectional: bool) -> RelativeBias {
        let table = Tensor::zeros((32, 1), DType::F32, &Device::Cpu).unwrap();
        RelativeBias {
            table: Embedding::new(table, 1),
            buckets: 32,
            max_distance: 128,
            bidirectional,
        }
    }

    /// Buckets printed by transformers' `T5Attention._relative_position_bucket` (32 buckets,
    /// max distance 128) for these relative positions.
    #[test]
    fn buckets_match_transformers() {
        let positions = [
            -300i64, -128, -64, -17, -16, -9, -8, -7, -1, 0, 1, 7, 8, 15, 16, 17, 40, 127, 128, 500,
        ];
        let enc: Vec<u32> = positions
            .iter()
            .map(|&p| relative(true).bucket(p))
            .collect();
        let dec: Vec<u32> = positions
            .iter()
            .map(|&p| relative(false).bucket(p))
            .collect();
        assert_eq!(enc, ENCODER_BUCKETS);
        assert_eq!(dec, DECODER_BUCKETS);
    }

    const ENCODER_BUCKETS: [u32; 20] = [
        15, 15, 14, 10, 10, 8, 8, 7, 1, 0, 17, 23, 24, 25, 26, 26, 28, 31, 31, 31,
    ];
    const DECODER_BUCKETS: [u32; 20] = [
        31, 31, 26, 16, 16, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
}
