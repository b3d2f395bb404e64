//! The pieces every family shares, written once: multi-head attention (fused projections,
//! additive biases for padding masks and T5's relative positions), the caller-owned
//! decoder cache with its row selection, the feed-forward block, and residual sublayers.
//!
//! Why not candle-transformers' layers: their encoders take no padding mask, their decoders
//! keep the cache inside the model, and their cross-attention projects the encoder output at
//! every step. Here the cross-attention keys and values are projected once in
//! `DecoderCache::new`, and a step costs one row of work per layer: on the CPU in f32 the
//! step's attention runs fused on plain memory (`super::host_attention`); elsewhere its keys
//! and values are appended in place to a preallocated tensor buffer (`DeviceKv`).

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::Activation;

use super::encoder_attention;
use super::host_attention::{cross, with_host_f32, HostKv, Memory};
use super::linear::{Linear, WeightPrecision};
use super::weights::Weights;
use super::ModelError;

/// The Hugging Face names of one attention block's projections.
pub struct AttentionNames {
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub out: &'static str,
}

/// The shape of an attention block, and how it is stored.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub d_model: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Whether the projections carry biases (BART family: yes; T5: no).
    pub bias: bool,
    /// Factor applied to the queries (head_dim^-0.5 for BART family; 1 for T5), folded into
    /// the query projection at load time.
    pub query_scale: f64,
}

impl AttentionShape {
    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Reads one projection (`prefix.name.weight`, optional bias) of shape (out, in).
fn projection(
    w: &Weights,
    prefix: &str,
    name: &str,
    (out, inp): (usize, usize),
    bias: bool,
    scale: f64,
) -> std::result::Result<(Tensor, Option<Tensor>), ModelError> {
    let weight = w.get(&format!("{prefix}.{name}.weight"), (out, inp))?;
    let bias = bias
        .then(|| w.get(&format!("{prefix}.{name}.bias"), out))
        .transpose()?;
    if scale == 1.0 {
        return Ok((weight, bias));
    }
    let scaled = |t: Tensor| t.affine(scale, 0.0).map_err(ModelError::from);
    Ok((scaled(weight)?, bias.map(scaled).transpose()?))
}

/// Several projections of the same input fused into one matrix, so one matmul does them all.
/// An attention block's four projections as stored (weight, bias), the query pre-scaled as
/// the family asks.
struct Projections {
    q: (Tensor, Option<Tensor>),
    k: (Tensor, Option<Tensor>),
    v: (Tensor, Option<Tensor>),
    out: (Tensor, Option<Tensor>),
}

fn projections(
    w: &Weights,
    prefix: &str,
    names: &AttentionNames,
    shape: AttentionShape,
) -> std::result::Result<Projections, ModelError> {
    let dims = (shape.inner(), shape.d_model);
    let out_dims = (shape.d_model, shape.inner());
    Ok(Projections {
        q: projection(w, prefix, names.q, dims, shape.bias, shape.query_scale)?,
        k: projection(w, prefix, names.k, dims, shape.bias, 1.0)?,
        v: projection(w, prefix, names.v, dims, shape.bias, 1.0)?,
        out: projection(w, prefix, names.out, out_dims, shape.bias, 1.0)?,
    })
}

fn fused(
    w: &Weights,
    parts: Vec<(Tensor, Option<Tensor>)>,
) -> std::result::Result<Linear, ModelError> {
    let (weights, biases): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    let weight = Tensor::cat(&weights, 0)?;
    let bias = match biases.into_iter().collect::<Option<Vec<_>>>() {
        Some(b) => Some(Tensor::cat(&b, 0)?),
        None => None,
    };
    Ok(Linear::load(weight, bias, w.precision())?)
}

/// (batch, len, heads * head_dim) -> (batch, heads, len, head_dim), contiguous for matmul.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, inner) = x.dims3()?;
    x.reshape((b, t, heads, inner / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// (batch, heads, len, head_dim) -> (batch, len, heads * head_dim).
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * d))
}

/// softmax(q kᵀ + biases) v, per head. Each bias broadcasts to (batch, heads, q_len, k_len);
/// they are added one by one so that none is materialized at the full size.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, biases: &[&Tensor]) -> Result<Tensor> {
    let mut scores = q.matmul(&k.transpose(2, 3)?)?;
    for bias in biases {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(v)
}

/// Self-attention with its query, key and value projections fused into one matrix.
pub struct SelfAttention {
    qkv: Linear,
    out: Linear,
    shape: AttentionShape,
}

impl SelfAttention {
    pub fn load(
        w: &Weights,
        prefix: &str,
        names: &AttentionNames,
        shape: AttentionShape,
    ) -> std::result::Result<Self, ModelError> {
        let Projections { q, k, v, out } = projections(w, prefix, names, shape)?;
        Ok(Self {
            qkv: fused(w, vec![q, k, v])?,
            out: Linear::load(out.0, out.1, w.precision())?,
            shape,
        })
    }

    fn project(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        self.split(&self.qkv.forward(x)?)
    }

    /// The fused projection's output cut into queries, keys and values, heads split.
    fn split(&self, qkv: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let inner = self.shape.inner();
        let part =
            |i: usize| split_heads(&qkv.narrow(D::Minus1, i * inner, inner)?, self.shape.heads);
        Ok((part(0)?, part(1)?, part(2)?))
    }

    /// Every position attends every position (the encoder); `biases` carry the padding mask
    /// (and T5's relative positions).
    pub fn forward(&self, x: &Tensor, biases: &[&Tensor]) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        if on_host(&[&qkv]) && on_host(biases) {
            // f32 on the CPU: one fused pass per (input, head), candle's bits (see
            // `encoder_attention`); `None` for the shapes it leaves to candle.
            let heads = self.shape.heads;
            if let Some(attended) = encoder_attention::attend_tensors(&qkv, heads, biases)? {
                return self.out.forward(&attended);
            }
        }
        let (q, k, v) = self.split(&qkv)?;
        self.out
            .forward(&merge_heads(&attend(&q, &k, &v, biases)?)?)
    }

    /// One decoder position: its keys and values join `cache`, and it attends all of them.
    pub fn step(&self, x: &Tensor, biases: &[&Tensor], cache: &mut KvBuffer) -> Result<Tensor> {
        let cache = match cache {
            KvBuffer::Device(cache) => cache,
            KvBuffer::Host(cache) => return self.host_step(x, biases, cache),
        };
        let (q, k, v) = self.project(x)?;
        let (k, v) = cache.append(&k, &v)?;
        self.out
            .forward(&merge_heads(&attend(&q, &k, &v, biases)?)?)
    }

    /// `step` on the CPU in f32: the fused projection's output goes straight to the cache.
    fn host_step(&self, x: &Tensor, biases: &[&Tensor], cache: &mut HostKv) -> Result<Tensor> {
        let (rows, len, _) = x.dims3()?;
        if len != 1 {
            candle_core::bail!("a decoder step takes one position per row, not {len}");
        }
        let qkv = self.qkv.forward(x)?.contiguous()?;
        let bias = match biases {
            [] => None,
            [bias] => Some(bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            _ => candle_core::bail!("a decoder step takes at most one self-attention bias"),
        };
        let attended = with_host_f32([&qkv], |[qkv]| cache.step(qkv, bias.as_deref()))??;
        self.out.forward(&Tensor::from_vec(
            attended,
            (rows, 1, self.shape.inner()),
            x.device(),
        )?)
    }
}

/// Attention of the decoder over the encoder output, whose keys and values are projected once.
pub struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    shape: AttentionShape,
}

impl CrossAttention {
    pub fn load(
        w: &Weights,
        prefix: &str,
        names: &AttentionNames,
        shape: AttentionShape,
    ) -> std::result::Result<Self, ModelError> {
        let Projections { q, k, v, out } = projections(w, prefix, names, shape)?;
        Ok(Self {
            q: Linear::load(q.0, q.1, w.precision())?,
            kv: fused(w, vec![k, v])?,
            out: Linear::load(out.0, out.1, w.precision())?,
            shape,
        })
    }

    /// Keys and values of the encoder output, each (rows, heads, src_len, head_dim).
    pub fn project_memory(&self, encoded: &Tensor) -> Result<(Tensor, Tensor)> {
        let kv = self.kv.forward(encoded)?;
        let inner = self.shape.inner();
        let part =
            |i: usize| split_heads(&kv.narrow(D::Minus1, i * inner, inner)?, self.shape.heads);
        Ok((part(0)?, part(1)?))
    }

    /// `x`: (rows, len, d_model). Memory row `m` serves the `group` consecutive rows
    /// `m * group..(m + 1) * group` (the beams of one input), which attend it as one block of
    /// queries: one matmul per memory row and head instead of one per beam.
    pub fn forward(
        &self,
        x: &Tensor,
        memory: &(Tensor, Tensor),
        bias: &Tensor,
        group: usize,
    ) -> Result<Tensor> {
        let (rows, len, _) = x.dims3()?;
        let q = self.q.forward(x)?;
        if len == 1 && on_host(&[&q, &memory.0, &memory.1, bias]) {
            return self.host_forward(&q, memory, bias, group);
        }
        let q = q.reshape((rows / group, group * len, self.shape.inner()))?;
        let attended = attend(
            &split_heads(&q, self.shape.heads)?,
            &memory.0,
            &memory.1,
            &[bias],
        )?;
        let merged = merge_heads(&attended)?.reshape((rows, len, self.shape.inner()))?;
        self.out.forward(&merged)
    }
}

impl CrossAttention {
    /// `forward` for one position per row on the CPU in f32 (see [`super::host_attention`]).
    fn host_forward(
        &self,
        q: &Tensor,
        memory: &(Tensor, Tensor),
        bias: &Tensor,
        group: usize,
    ) -> Result<Tensor> {
        let (rows, _, inner) = q.dims3()?;
        let (keys, values) = (memory.0.contiguous()?, memory.1.contiguous()?);
        let (bias, q) = (bias.contiguous()?, q.contiguous()?);
        let attended = with_host_f32([&keys, &values, &bias, &q], |[keys, values, bias, q]| {
            let memory = Memory {
                keys,
                values,
                bias,
                heads: self.shape.heads,
                dim: self.shape.head_dim,
            };
            cross(q, &memory, group)
        })??;
        self.out
            .forward(&Tensor::from_vec(attended, (rows, 1, inner), q.device())?)
    }
}

/// Whether every tensor is f32 on the CPU (the fused step's precondition).
fn on_host(tensors: &[&Tensor]) -> bool {
    (tensors.iter()).all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The feed-forward block: `down(act(up(x)))`, or with a gate `down(act(up₀(x)) * up₁(x))`
/// where up₀ and up₁ are fused into one matrix.
///
/// `down` may be held in another dtype than the rest (T5's `wo` stays f32 under f16, as
/// transformers' `_keep_in_fp32_modules`): its input is converted to that dtype first, and the
/// block's output is in that dtype.
pub struct FeedForward {
    up: Linear,
    down: Linear,
    down_dtype: DType,
    act: Activation,
    gated: bool,
}

impl FeedForward {
    /// `up` names one projection, or two (gate first) for a gated block. `down_dtype`: the
    /// dtype `down` is held and applied in, when it differs from the weights' (without bias).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        prefix: &str,
        up: &[&str],
        down: &str,
        (d_model, d_ff): (usize, usize),
        bias: bool,
        act: Activation,
        down_dtype: Option<DType>,
    ) -> std::result::Result<Self, ModelError> {
        let ups = up
            .iter()
            .map(|name| projection(w, prefix, name, (d_ff, d_model), bias, 1.0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let (down, down_dtype) = match down_dtype {
            Some(dtype) if dtype != w.dtype() && !bias => {
                let name = format!("{prefix}.{down}.weight");
                let weight = w.get_in_dtype(&name, (d_model, d_ff), dtype)?;
                (Linear::load(weight, None, w.precision())?, dtype)
            }
            _ => {
                let (dw, db) = projection(w, prefix, down, (d_model, d_ff), bias, 1.0)?;
                (Linear::load(dw, db, w.precision())?, w.dtype())
            }
        };
        Ok(Self {
            gated: ups.len() > 1,
            up: fused(w, ups)?,
            down,
            down_dtype,
            act,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = if !self.gated && self.act != Activation::NewGelu {
            // Swish and relu run on the product's own buffer (`forward_activated`).
            self.up.forward_activated(x, self.act)?
        } else {
            let h = self.up.forward(x)?;
            if self.act == Activation::NewGelu && on_host(&[&h]) {
                host_gelu(&h, self.gated)?
            } else if self.gated {
                let d_ff = h.dim(D::Minus1)? / 2;
                (self.act.forward(&h.narrow(D::Minus1, 0, d_ff)?)?
                    * h.narrow(D::Minus1, d_ff, d_ff)?)?
            } else {
                self.act.forward(&h)?
            }
        };
        self.down.forward(&h.to_dtype(self.down_dtype)?)
    }
}

/// `gelu_new` (times the gate's half when `gated`) of an f32 CPU tensor, in one vectorized pass
/// ([`super::gelu`]: candle's scalar `tanhf` per value was 12% of a T5 summary's time).
fn host_gelu(h: &Tensor, gated: bool) -> Result<Tensor> {
    let h = h.contiguous()?;
    let mut dims = h.dims().to_vec();
    let values = with_host_f32([&h], |[h]| {
        let last = dims
            .last_mut()
            .expect("a linear layer's output has a feature axis");
        if gated {
            *last /= 2;
            super::gelu::gated_gelu(h, *last)
        } else {
            super::gelu::gelu(h)
        }
    })?;
    Tensor::from_vec(values, dims, h.device())
}

/// Parses an activation name of transformers' ACT2FN that candle-nn implements.
pub fn activation(name: &str) -> Option<Activation> {
    match name {
        "relu" => Some(Activation::Relu),
        "gelu" => Some(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::NewGelu),
        "silu" | "swish" => Some(Activation::Silu),
        "sigmoid" => Some(Activation::Sigmoid),
        "mish" => Some(Activation::Mish),
        _ => None,
    }
}

/// A residual sublayer: post-norm `norm(x + f(x))` (Marian, BART) or pre-norm
/// `x + f(norm(x))` (mBART, T5). When `x` and `f(x)` differ in dtype (T5 in f16: its
/// feed-forward output is f32) the sum is f32, as torch promotes `f16 + f32`: from there on the
/// residual stream stays f32, and the norms give the weights' dtype back to the sublayers.
pub fn residual(
    x: &Tensor,
    norm: &Norm,
    pre_norm: bool,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if pre_norm {
        promoted_add(x, &f(&norm.forward(x)?)?)
    } else {
        norm.forward_sum(x, &f(x)?)
    }
}

/// `a + b`, in f32 when their dtypes differ (torch's type promotion for f16/bf16 with f32).
fn promoted_add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == b.dtype() {
        return a + b;
    }
    a.to_dtype(DType::F32)? + b.to_dtype(DType::F32)?
}

/// Where and when a stack clamps f16 hidden states, each family as transformers does; the
/// bound is the f16 maximum less 1000, so one overflow does not turn a whole output into NaN.
/// Only f16 tensors are ever clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfClamp {
    /// Never (decoders of the BART family).
    Never,
    /// After every sublayer, only when some value is infinite (T5Block: otherwise its bound is
    /// the f16 maximum itself, which changes no value).
    SublayerOnInf,
    /// After each encoder layer, only when some value is not finite (Marian, BART).
    LayerOnNonFinite,
    /// After each encoder layer, always (mBART).
    Layer,
}

impl HalfClamp {
    fn apply(self, x: Tensor) -> Result<Tensor> {
        const LIMIT: f64 = 65504.0 - 1000.0;
        if self == Self::Never || x.dtype() != DType::F16 {
            return Ok(x);
        }
        let clamp = match self {
            Self::Layer => true,
            Self::Never => false,
            // A sum in f32 of finite f16 values is finite: only a non-finite value makes it not.
            _ if x
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?
                .is_finite() =>
            {
                false
            }
            Self::LayerOnNonFinite => true,
            Self::SublayerOnInf => {
                let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                values.iter().any(|v| v.is_infinite())
            }
        };
        if clamp {
            x.clamp(-LIMIT, LIMIT)
        } else {
            Ok(x)
        }
    }

    fn per_sublayer(self, x: Tensor) -> Result<Tensor> {
        match self {
            Self::SublayerOnInf => self.apply(x),
            _ => Ok(x),
        }
    }

    fn per_layer(self, x: Tensor) -> Result<Tensor> {
        match self {
            Self::Layer | Self::LayerOnNonFinite => self.apply(x),
            _ => Ok(x),
        }
    }
}

/// The most negative finite value of `dtype`: what transformers adds to masked scores.
fn mask_value(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.3895313892515355e38,
        _ => f32::MIN as f64,
    }
}

/// The additive attention bias of a padding mask: (batch, 1, 1, src_len), 0 where `mask` is 1
/// and the dtype's most negative value where it is 0.
pub fn padding_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let keep = mask.to_dtype(DType::F32)?;
    let bias = ((keep - 1.0)? * -mask_value(dtype))?;
    bias.to_dtype(dtype)?.reshape((b, 1, 1, s))
}

/// Checks a length in positions against the model's position limit.
pub fn check_length(len: usize, limit: Option<usize>, side: super::Side) -> Result<()> {
    match limit {
        Some(max) if len > max => Err(candle_core::Error::wrap(ModelError::TooLong {
            side,
            tokens: len,
            max,
        })),
        _ => Ok(()),
    }
}

/// The keys and values one decoder self-attention layer has seen so far: on the CPU in f32 in
/// plain memory that the fused step attends directly ([`HostKv`]), elsewhere as tensors.
pub enum KvBuffer {
    Host(HostKv),
    Device(DeviceKv),
}

impl KvBuffer {
    fn new(
        rows: usize,
        heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if device.is_cpu() && dtype == DType::F32 {
            return Ok(Self::Host(HostKv::new(rows, heads, head_dim)));
        }
        DeviceKv::new(rows, heads, head_dim, dtype, device).map(Self::Device)
    }

    /// Keeps `rows`, given both as a tensor (for the device form) and as read on the host.
    fn select_rows(&mut self, rows: &Tensor, wanted: &[u32]) -> Result<()> {
        match self {
            Self::Host(kv) => kv.select_rows(wanted),
            Self::Device(kv) => kv.select_rows(rows),
        }
    }
}

/// The keys and values one decoder self-attention layer has seen so far, stored in a buffer of
/// spare capacity (rows, heads, capacity, head_dim) that new positions are written into.
pub struct DeviceKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl DeviceKv {
    const INITIAL_CAPACITY: usize = 32;

    fn new(
        rows: usize,
        heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let buffer = || {
            Tensor::zeros(
                (rows, heads, Self::INITIAL_CAPACITY, head_dim),
                dtype,
                device,
            )
        };
        Ok(Self {
            k: buffer()?,
            v: buffer()?,
            len: 0,
        })
    }

    /// Doubles the capacity, keeping the positions written so far.
    fn grow(&mut self) -> Result<()> {
        let enlarge = |t: &Tensor| -> Result<Tensor> {
            let (r, h, cap, d) = t.dims4()?;
            let bigger = Tensor::zeros((r, h, 2 * cap, d), t.dtype(), t.device())?;
            bigger.slice_set(t, 2, 0)?;
            Ok(bigger)
        };
        self.k = enlarge(&self.k)?;
        self.v = enlarge(&self.v)?;
        Ok(())
    }

    /// Writes one position's keys and values; returns views of all positions so far.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.len == self.k.dim(2)? {
            self.grow()?;
        }
        self.k.slice_set(k, 2, self.len)?;
        self.v.slice_set(v, 2, self.len)?;
        self.len += 1;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        if self.len == 0 {
            // nothing written yet: fresh buffers for the new number of rows, nothing to copy
            let (_, h, cap, d) = self.k.dims4()?;
            self.k = Tensor::zeros((rows.dim(0)?, h, cap, d), self.k.dtype(), self.k.device())?;
            self.v = self.k.zeros_like()?;
            return Ok(());
        }
        self.k = self.k.index_select(rows, 0)?;
        self.v = self.v.index_select(rows, 0)?;
        Ok(())
    }
}

/// One decoder layer's state: its self-attention buffer and its projected encoder memory.
struct LayerCache {
    own: KvBuffer,
    memory: (Tensor, Tensor),
}

/// Everything a decoder needs between steps, owned by the caller (the generation engine):
/// per-layer self-attention keys/values, the cross-attention keys/values projected once from
/// the encoder output, the encoder padding bias, and the number of positions decoded.
pub struct DecoderCache {
    layers: Vec<LayerCache>,
    /// The encoder padding bias, one row per memory row: (memory rows, 1, 1, src_len).
    memory_bias: Tensor,
    /// For each current row, the memory row it reads.
    sources: Vec<u32>,
    /// Rows per memory row: `sources[i] == i / group` always holds.
    group: usize,
    position: usize,
}

impl DecoderCache {
    /// Projects the encoder output for every layer's cross-attention and prepares empty
    /// self-attention buffers. `encoded`: (rows, src_len, d_model); `mask`: (rows, src_len).
    pub fn new(decoder: &Stack, encoded: &Tensor, mask: &Tensor) -> Result<Self> {
        let rows = encoded.dim(0)?;
        let layers = decoder
            .layers
            .iter()
            .map(|layer| {
                let shape = layer.self_attn.shape;
                let own = KvBuffer::new(
                    rows,
                    shape.heads,
                    shape.head_dim,
                    encoded.dtype(),
                    encoded.device(),
                )?;
                let memory = match &layer.cross {
                    Some((attn, _)) => attn.project_memory(encoded)?,
                    None => candle_core::bail!("a decoder layer without cross-attention"),
                };
                Ok(LayerCache { own, memory })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            memory_bias: padding_bias(mask, encoded.dtype())?,
            sources: (0..rows as u32).collect(),
            group: 1,
            position: 0,
        })
    }

    /// How many positions have been decoded (the position of the next token).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Layer `i`'s self-attention buffer and encoder memory.
    pub fn layer(&mut self, i: usize) -> (&mut KvBuffer, &(Tensor, Tensor)) {
        let layer = &mut self.layers[i];
        (&mut layer.own, &layer.memory)
    }

    /// Marks the end of a step: one more position decoded.
    pub fn advance(&mut self) {
        self.position += 1;
    }

    /// Keeps `rows` (u32 indices into the current rows, may repeat) of every cached tensor.
    ///
    /// The encoder memory is kept once per input, not once per row: when the new rows come in
    /// equal consecutive groups reading one memory row each (beams of one input, the way beam
    /// search expands and reorders them after starting with one row per input), the memory
    /// only loses the rows of inputs that left; any other selection expands it to one memory row
    /// per row. The identity selection copies nothing.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        let wanted = rows.to_vec1::<u32>()?;
        if let Some(&bad) = wanted.iter().find(|&&r| r as usize >= self.sources.len()) {
            candle_core::bail!("select_rows: row {bad} of {} rows", self.sources.len());
        }
        let identity = wanted.len() == self.sources.len()
            && wanted.iter().enumerate().all(|(i, &r)| r as usize == i);
        if identity {
            return Ok(());
        }
        for layer in &mut self.layers {
            layer.own.select_rows(rows, &wanted)?;
        }
        let sources: Vec<u32> = wanted.iter().map(|&r| self.sources[r as usize]).collect();
        let (kept, group) = match grouping(&sources) {
            Some(grouped) => grouped,
            None => (sources, 1),
        };
        let memory_rows = self.memory_bias.dim(0)?;
        let unchanged =
            kept.len() == memory_rows && kept.iter().enumerate().all(|(i, &m)| m as usize == i);
        if !unchanged {
            let kept_t = Tensor::new(kept.as_slice(), rows.device())?;
            for layer in &mut self.layers {
                layer.memory = (
                    layer.memory.0.index_select(&kept_t, 0)?,
                    layer.memory.1.index_select(&kept_t, 0)?,
                );
            }
            self.memory_bias = self.memory_bias.index_select(&kept_t, 0)?;
        }
        self.group = group;
        self.sources = (0..wanted.len() as u32).map(|i| i / group as u32).collect();
        Ok(())
    }
}

/// If `sources` is a run of equal-length groups, each reading one memory row: the memory row of
/// each group and the group length.
fn grouping(sources: &[u32]) -> Option<(Vec<u32>, usize)> {
    let first = *sources.first()?;
    let group = sources.iter().take_while(|&&s| s == first).count();
    if !sources.len().is_multiple_of(group) {
        return None;
    }
    let kept: Vec<u32> = sources.iter().step_by(group).copied().collect();
    let regular = sources
        .iter()
        .enumerate()
        .all(|(i, &s)| s == kept[i / group]);
    regular.then_some((kept, group))
}

/// Reads token-embedding and output matrices, each once: a name read before gives the same
/// tensor, and a matrix whose values equal one read before (the tied copies of a
/// pytorch_model.bin) becomes that tensor, so tied layers share one copy (and the packed output
/// layer serves the lookups, see `TokenTable`).
pub struct EmbeddingMemo<'a> {
    w: &'a Weights,
    loaded: Vec<(String, Tensor)>,
}

impl<'a> EmbeddingMemo<'a> {
    pub fn new(w: &'a Weights) -> Self {
        Self {
            w,
            loaded: Vec::new(),
        }
    }

    /// The first of `names` the file holds, of shape `shape`.
    pub fn get<S: Into<candle_core::Shape>>(
        &mut self,
        names: &[&str],
        shape: S,
    ) -> std::result::Result<Tensor, ModelError> {
        let Some(&name) = names.iter().find(|n| self.w.contains(n)) else {
            return Err(ModelError::MissingWeight {
                file: self.w.file().to_path_buf(),
                name: names.join(" or "),
            });
        };
        if let Some((_, t)) = self.loaded.iter().find(|(n, _)| n == name) {
            return Ok(t.clone());
        }
        let tensor = self.w.get(name, shape)?;
        let same = self
            .loaded
            .iter()
            .map(|(_, t)| t)
            .find(|t| t.shape() == tensor.shape() && equal(t, &tensor).unwrap_or(false))
            .cloned();
        let tensor = same.unwrap_or(tensor);
        self.loaded.push((name.to_string(), tensor.clone()));
        Ok(tensor)
    }
}

/// Whether two tensors of one shape hold the same values.
fn equal(a: &Tensor, b: &Tensor) -> Result<bool> {
    let differing = a
        .ne(b)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(differing == 0.0)
}

/// The output layer: logits = hidden · headᵀ (+ bias), as f32 (rows, vocab).
pub struct OutputHead {
    linear: Linear,
}

impl OutputHead {
    /// The layer held as `precision` says.
    pub fn new(weight: Tensor, bias: Option<Tensor>, precision: WeightPrecision) -> Result<Self> {
        Ok(Self {
            linear: Linear::load(weight, bias, precision)?,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.linear.out_features()
    }

    /// The layer itself (a tied embedding table shares its packed weight).
    pub fn linear(&self) -> &Linear {
        &self.linear
    }

    /// `hidden`: (rows, d_model).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.linear.forward(hidden)?.to_dtype(DType::F32)
    }

    /// Whether [`Self::logits_blocks`] runs (an f32 head packed for mtsum's kernels).
    pub fn blocked(&self) -> bool {
        self.linear.packed_f32()
    }

    /// The logits of `hidden` (rows, d_model) handed to `f` a block of `block` ids at a time;
    /// see [`Linear::forward_blocks`].
    pub fn logits_blocks(
        &self,
        hidden: &Tensor,
        block: usize,
        f: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> Result<()> {
        self.linear.forward_blocks(hidden, block, f)
    }
}

/// A layer norm (BART family) or T5's RMS norm (no mean, no bias).
pub enum Norm {
    Layer(candle_nn::LayerNorm),
    Rms(candle_nn::RmsNorm),
}

impl Norm {
    /// `prefix.weight` and `prefix.bias` (nn.LayerNorm).
    pub fn layer(
        w: &Weights,
        prefix: &str,
        size: usize,
        eps: f64,
    ) -> std::result::Result<Self, ModelError> {
        let weight = w.get(&format!("{prefix}.weight"), size)?;
        let bias = w.get(&format!("{prefix}.bias"), size)?;
        Ok(Self::Layer(candle_nn::LayerNorm::new(weight, bias, eps)))
    }

    /// `prefix.weight` (T5LayerNorm).
    pub fn rms(
        w: &Weights,
        prefix: &str,
        size: usize,
        eps: f64,
    ) -> std::result::Result<Self, ModelError> {
        let weight = w.get(&format!("{prefix}.weight"), size)?;
        Ok(Self::Rms(candle_nn::RmsNorm::new(weight, eps)))
    }
}

impl Norm {
    /// `self.forward(a + b)` (a post-norm residual). For a layer norm in f32 on the CPU the sum
    /// and the norm are one pass per row on plain memory, computed as candle's add and its
    /// `layer_norm` op compute them (same operations in the same order, so the same bits): a
    /// decoder step's rows are short (64 x 512 values), and two candle ops each allocating and
    /// dispatching cost more than the arithmetic.
    fn forward_sum(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if let Self::Layer(n) = self {
            if let Some(out) = host_add_layer_norm(a, b, n)? {
                return Ok(out);
            }
        }
        self.forward(&promoted_add(a, b)?)
    }
}

/// [`Norm::forward_sum`] for a layer norm with a bias, `a` and `b` f32 CPU tensors of one shape
/// and f32 parameters; `None` for anything else.
fn host_add_layer_norm(
    a: &Tensor,
    b: &Tensor,
    norm: &candle_nn::LayerNorm,
) -> Result<Option<Tensor>> {
    let Some(beta) = norm.bias() else {
        return Ok(None);
    };
    let alpha = norm.weight();
    let all = [a, b, alpha, beta];
    let width = a.dim(D::Minus1)?;
    let fits = on_host(&all)
        && norm.remove_mean()
        && a.dims() == b.dims()
        && alpha.dims() == [width]
        && beta.dims() == [width]
        && width > 0;
    if !fits {
        return Ok(None);
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let eps = norm.eps() as f32;
    let out = with_host_f32([&a, &b, alpha, beta], |[a, b, alpha, beta]| {
        let mut out = vec![0f32; a.len()];
        let block = width * NORM_ROWS;
        crate::parallel::for_each_chunk_mut(&mut out, block, |i, out| {
            let (a, b) = (&a[i * block..][..out.len()], &b[i * block..][..out.len()]);
            // candle's add, then candle-nn 0.11's layer_norm CPU kernel, step for step.
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = x + y;
            }
            let stats = if out.len() == block {
                row_sums::<NORM_ROWS>(out, width)
            } else {
                let mut stats = [(0f32, 0f32); NORM_ROWS];
                for (row, s) in out.chunks(width).zip(&mut stats) {
                    *s = row_sums::<1>(row, width)[0];
                }
                stats
            };
            for (row, (sum, sum2)) in out.chunks_mut(width).zip(stats) {
                let mean = sum / width as f32;
                let var = sum2 / width as f32 - mean * mean;
                let inv_std = (var + eps).sqrt().recip();
                for ((o, &alpha), &beta) in row.iter_mut().zip(alpha).zip(beta) {
                    *o = (*o - mean) * inv_std * alpha + beta;
                }
            }
        });
        out
    })?;
    Ok(Some(Tensor::from_vec(out, a.shape(), a.device())?))
}

/// Rows a layer-norm task takes at once (see [`row_sums`]).
const NORM_ROWS: usize = 8;

/// (sum, sum of squares) of each of the `R` rows of `rows` (`R` x `width` values), each summed
/// in column order as candle's layer norm sums one row. A row's two sums are chains of
/// dependent adds, each waiting for the one before (four cycles apiece): summing `R` rows side
/// by side keeps `2 R` chains in flight, so the adds overlap, and every row's result stays the
/// same bits.
#[inline(always)]
fn row_sums<const R: usize>(rows: &[f32], width: usize) -> [(f32, f32); R] {
    let mut sums = [0f32; R];
    let mut squares = [0f32; R];
    for j in 0..width {
        for r in 0..R {
            let v = rows[r * width + j];
            sums[r] += v;
            squares[r] += v * v;
        }
    }
    std::array::from_fn(|r| (sums[r], squares[r]))
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Layer(n) => n.forward(x),
            Self::Rms(n) if x.dtype() == DType::F32 && n.weight().dtype() == DType::F32 => {
                match host_rms_norm(x, n.weight(), n.eps() as f32)? {
                    Some(normed) => Ok(normed),
                    None => n.forward(x),
                }
            }
            Self::Rms(n) => rms_half(x, n.weight(), n.eps()),
        }
    }
}

/// candle-nn 0.11's `rms_norm` op (T5LayerNorm in f32) on an f32 CPU tensor, `None` for any
/// other: per row the sum of squares in column order, `m = sqrt(sum / width + eps)`, then
/// `x / m * weight`, the same operations in the same order, so the same bits. candle sums one
/// row at a time, a chain of dependent adds (four cycles each) per row: summed
/// [`NORM_ROWS`] rows side by side, the chains overlap. Few rows (a decoder step's) stay on
/// the calling thread, as candle keeps them.
fn host_rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let width = x.dim(D::Minus1)?;
    if !on_host(&[x, weight]) || !x.is_contiguous() || weight.dims() != [width] || width == 0 {
        return Ok(None);
    }
    let out = with_host_f32([x, weight], |[x, alpha]| {
        let mut out = vec![0f32; x.len()];
        let block = width * NORM_ROWS;
        let norm_block = |i: usize, out: &mut [f32]| {
            let x = &x[i * block..][..out.len()];
            let squares = if x.len() == block {
                row_squares::<NORM_ROWS>(x, width)
            } else {
                let mut squares = [0f32; NORM_ROWS];
                for (row, s) in x.chunks(width).zip(&mut squares) {
                    *s = row_squares::<1>(row, width)[0];
                }
                squares
            };
            for ((out, x), sum2) in out.chunks_mut(width).zip(x.chunks(width)).zip(squares) {
                let m = (sum2 / width as f32 + eps).sqrt();
                for ((o, &v), &alpha) in out.iter_mut().zip(x).zip(alpha) {
                    *o = v / m * alpha;
                }
            }
        };
        // candle-nn's own split: rows one after the other up to 32, parallel beyond.
        if x.len() <= 32 * width {
            (out.chunks_mut(block).enumerate()).for_each(|(i, out)| norm_block(i, out));
        } else {
            crate::parallel::for_each_chunk_mut(&mut out, block, norm_block);
        }
        out
    })?;
    Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
}

/// The sum of squares of each of the `R` rows of `rows` (`R` x `width` values), each summed in
/// column order from zero as candle-nn's `rms_norm` sums one row (see [`row_sums`] for why
/// side by side).
#[inline(always)]
fn row_squares<const R: usize>(rows: &[f32], width: usize) -> [f32; R] {
    let mut squares = [0f32; R];
    for j in 0..width {
        for (r, s) in squares.iter_mut().enumerate() {
            let v = rows[r * width + j];
            *s += v * v;
        }
    }
    squares
}

/// T5LayerNorm as transformers runs it with f16/bf16 weights, on an input of either its dtype or
/// f32 (T5's residual stream after an f32 `wo`): the mean square in f32, `x * rsqrt(...)` in
/// f32, rounded to the weight's dtype, then times the weight in that dtype.
fn rms_half(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
    let scale = (variance + eps)?.sqrt()?.recip()?;
    let normed = x.broadcast_mul(&scale)?.to_dtype(weight.dtype())?;
    normed.broadcast_mul(weight)
}

/// One transformer layer of either stack: self-attention, cross-attention (decoder only) and
/// feed-forward, each a residual sublayer with its own norm.
pub struct Layer {
    pub self_attn: SelfAttention,
    pub self_norm: Norm,
    pub cross: Option<(CrossAttention, Norm)>,
    pub ffn: FeedForward,
    pub ffn_norm: Norm,
}

impl Layer {
    /// An encoder layer over all positions; `biases` hold the padding mask (and T5's positions).
    pub fn encode(&self, x: &Tensor, biases: &[&Tensor], style: StackStyle) -> Result<Tensor> {
        let clamp = style.clamp;
        let x = residual(x, &self.self_norm, style.pre_norm, |h| {
            self.self_attn.forward(h, biases)
        })?;
        let x = clamp.per_sublayer(x)?;
        let x = residual(&x, &self.ffn_norm, style.pre_norm, |h| self.ffn.forward(h))?;
        clamp.per_layer(clamp.per_sublayer(x)?)
    }

    /// One decoder position. `self_bias`: T5's relative positions (None for BART family).
    pub fn step(
        &self,
        x: &Tensor,
        self_bias: Option<&Tensor>,
        own: &mut KvBuffer,
        memory: &(Tensor, Tensor),
        (memory_bias, group): (&Tensor, usize),
        style: StackStyle,
    ) -> Result<Tensor> {
        let (clamp, pre_norm) = (style.clamp, style.pre_norm);
        let x = residual(x, &self.self_norm, pre_norm, |h| {
            self.self_attn.step(h, self_bias.as_slice(), own)
        })?;
        let x = clamp.per_sublayer(x)?;
        let x = match &self.cross {
            Some((attn, norm)) => clamp.per_sublayer(residual(&x, norm, pre_norm, |h| {
                attn.forward(h, memory, memory_bias, group)
            })?)?,
            None => x,
        };
        let x = residual(&x, &self.ffn_norm, pre_norm, |h| self.ffn.forward(h))?;
        clamp.per_layer(clamp.per_sublayer(x)?)
    }
}

/// How a stack's layers put their sublayers together.
#[derive(Debug, Clone, Copy)]
pub struct StackStyle {
    pub pre_norm: bool,
    pub clamp: HalfClamp,
}

/// A stack of layers with an optional final norm (mBART, T5).
pub struct Stack {
    pub layers: Vec<Layer>,
    pub final_norm: Option<Norm>,
    pub style: StackStyle,
}

impl Stack {
    pub fn encode(&self, mut x: Tensor, biases: &[&Tensor]) -> Result<Tensor> {
        for layer in &self.layers {
            x = layer.encode(&x, biases, self.style)?;
        }
        self.finish(x)
    }

    /// One decoder step over every layer; advances the cache's position.
    pub fn step(
        &self,
        mut x: Tensor,
        self_bias: Option<&Tensor>,
        cache: &mut DecoderCache,
    ) -> Result<Tensor> {
        let memory_bias = cache.memory_bias.clone();
        let group = cache.group;
        for (i, layer) in self.layers.iter().enumerate() {
            let (own, memory) = cache.layer(i);
            let memory_layout = (&memory_bias, group);
            x = layer.step(&x, self_bias, own, memory, memory_layout, self.style)?;
        }
        cache.advance();
        self.finish(x)
    }

    fn finish(&self, x: Tensor) -> Result<Tensor> {
        match &self.final_norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused CPU step (host cache) and the tensor step (the cache used on GPUs and for f16
    /// / bf16) agree over many positions, a T5-style bias, and beam-style reorders.
    #[test]
    fn host_and_tensor_attention_steps_agree() {
        let dev = Device::Cpu;
        let shape = AttentionShape {
            d_model: 12,
            heads: 3,
            head_dim: 4,
            bias: true,
            query_scale: 0.5,
        };
        let randn = |dims: &[usize]| Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
        let attention = SelfAttention {
            qkv: Linear::new(randn(&[36, 12]), Some(randn(&[36]))),
            out: Linear::new(randn(&[12, 12]), None),
            shape,
        };
        let rows = 4;
        let mut host = KvBuffer::new(rows, 3, 4, DType::F32, &dev).unwrap();
        let mut tensor = KvBuffer::Device(DeviceKv::new(rows, 3, 4, DType::F32, &dev).unwrap());
        assert!(matches!(host, KvBuffer::Host(_)));
        for step in 0..40 {
            let x = randn(&[rows, 1, 12]);
            let bias = randn(&[1, 3, 1, step + 1]);
            let biases: &[&Tensor] = if step % 2 == 0 { &[&bias] } else { &[] };
            let a = attention.step(&x, biases, &mut host).unwrap();
            let b = attention.step(&x, biases, &mut tensor).unwrap();
            // The two paths sum in different orders: compare relative to the outputs' size
            // (random N(0, 1) weights give values in the tens on some draws).
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(
                diff < 1e-4 * scale.max(1.0),
                "step {step}: {diff} at scale {scale}"
            );
            if step % 3 == 1 {
                let wanted = [1u32, 1, 3, 0];
                let order = Tensor::new(&wanted, &dev).unwrap();
                host.select_rows(&order, &wanted).unwrap();
                tensor.select_rows(&order, &wanted).unwrap();
            }
        }
    }

    /// The fused add + layer norm gives the bits of candle's add followed by its layer norm,
    /// for row counts below, at and past a block of rows, and a width that is no multiple of
    /// any vector length.
    #[test]
    fn host_add_layer_norm_is_candles_add_then_norm() {
        let dev = Device::Cpu;
        let width = 37;
        let randn = |dims: &[usize]| Tensor::randn(0f32, 3.0, dims, &dev).unwrap();
        let norm = Norm::Layer(candle_nn::LayerNorm::new(
            randn(&[width]),
            randn(&[width]),
            1e-5,
        ));
        for rows in [1, 3, NORM_ROWS, NORM_ROWS + 5, 3 * NORM_ROWS] {
            let (a, b) = (randn(&[rows, 1, width]), randn(&[rows, 1, width]));
            let Norm::Layer(layer) = &norm else {
                unreachable!()
            };
            let fused = host_add_layer_norm(&a, &b, layer).unwrap();
            let fused = fused.expect("f32 CPU tensors take the host path");
            let want = norm.forward(&(&a + &b).unwrap()).unwrap();
            assert_eq!(fused.dims(), want.dims());
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(&fused), bits(&want), "{rows} rows");
            assert_eq!(bits(&norm.forward_sum(&a, &b).unwrap()), bits(&want));
        }
        // Another dtype takes candle's ops.
        let a = randn(&[2, width]).to_dtype(DType::F16).unwrap();
        let Norm::Layer(layer) = &norm else {
            unreachable!()
        };
        assert!(host_add_layer_norm(&a, &a, layer).unwrap().is_none());
    }

    /// The host RMS norm gives the bits of candle-nn's `rms_norm` op, serial and parallel,
    /// for row counts below, at and past a block of rows.
    #[test]
    fn host_rms_norm_is_candles() {
        let dev = Device::Cpu;
        let width = 37;
        let weight = Tensor::randn(0f32, 1.0, width, &dev).unwrap();
        let norm = candle_nn::RmsNorm::new(weight.clone(), 1e-6);
        for rows in [1, 3, NORM_ROWS, NORM_ROWS + 5, 32, 33, 5 * NORM_ROWS + 3] {
            let x = Tensor::randn(0f32, 3.0, (rows, 1, width), &dev).unwrap();
            let got = host_rms_norm(&x, &weight, 1e-6)
                .unwrap()
                .expect("host path");
            let want = norm.forward(&x).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(got.dims(), want.dims());
            assert_eq!(bits(&got), bits(&want), "{rows} rows");
        }
    }

    #[test]
    fn beams_of_one_input_form_groups() {
        assert_eq!(grouping(&[0, 0, 1, 1, 2, 2]), Some((vec![0, 1, 2], 2)));
        assert_eq!(grouping(&[2, 2, 2, 0, 0, 0]), Some((vec![2, 0], 3)));
        assert_eq!(grouping(&[3, 1]), Some((vec![3, 1], 1)));
        assert_eq!(grouping(&[0, 0, 1]), None);
        assert_eq!(grouping(&[0, 0, 1, 0]), None);
        assert_eq!(grouping(&[]), None);
    }
}
