//! Gemma 3 on candle's quantized matmuls, following llama.cpp's graph (`llm_build_gemma3`).
//!
//! This is the one family not run through candle-transformers: its `quantized_gemma3` (0.11.1)
//! computes the feed-forward with SiLU where Gemma uses GELU (tanh), so its logits on the real
//! Gemma 3 270M differ from llama.cpp's by up to 9.4 (logits' spread ~5); it also hides the
//! cached prefix from a multi-token continuation, ignores the sliding window when decoding, and
//! builds 131,072-position RoPE tables per layer (2.4 GB for the 270M model). The building blocks
//! here are candle's (`QMatMul`, `rms_norm`, `rope`) and, for Q8_0 (and widened Q5_0) matrices,
//! the engine's own product ([`super::q8`]), for Q4_K and Q6_K its own k-quant product
//! ([`super::kquant`]); the wiring and the KV cache are ours.

use std::sync::Arc;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::gguf::GgufInfo;
use super::kquant::{KKernel, KMatrix};
use super::q8::{Q8Kernel, Q8Matrix};
use crate::parallel::Team;

/// A Q5_0 matrix as the same values in Q8_0 blocks.
///
/// candle 0.11's Q5_0 dot product is its scalar reference code (`vec_dot_unopt`); Gemma 3's
/// 640-wide rows cannot hold k-quants, so llama.cpp's Q4_K_M mix stores most of the 270M model's
/// projections as Q5_0, and that scalar loop was two thirds of a generated token's time. A Q5_0
/// block holds `d·(q − 16)` with `q` in 0..32 and one f16 scale `d` per 32 values; a Q8_0 block
/// (`d`, 32 × i8) holds exactly those values, both take Q8_0 activations, so every block's
/// integer sum is the same and only the order of the float accumulation over blocks changes.
/// Q8_0's dot product is vectorized. The cost: 34 bytes per 32 weights instead of 22.
fn widen_q5_0(tensor: QTensor, device: &Device) -> candle_core::Result<QTensor> {
    if tensor.dtype() != GgmlDType::Q5_0 {
        return Ok(tensor);
    }
    const Q5_0_BLOCK: usize = 22;
    let raw = tensor.data()?;
    let mut widened = Vec::with_capacity(raw.len() / Q5_0_BLOCK * 34);
    for block in raw.chunks_exact(Q5_0_BLOCK) {
        widened.extend_from_slice(&block[..2]);
        let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let nibbles = &block[6..];
        let value =
            |nibble: u8, bit: usize| (nibble | ((((high >> bit) & 1) as u8) << 4)) as i8 - 16;
        let low_half = (0..16).map(|j| value(nibbles[j] & 0x0F, j));
        let high_half = (0..16).map(|j| value(nibbles[j] >> 4, j + 16));
        widened.extend(low_half.chain(high_half).map(|q| q as u8));
    }
    qtensor_from_ggml(
        GgmlDType::Q8_0,
        &widened,
        tensor.shape().dims().to_vec(),
        device,
    )
}

/// A weight matrix: Q8_0 (and widened Q5_0) on the CPU in the engine's own kernel
/// ([`Q8Matrix`]: blocked over a prompt's rows, no per-block scale conversion in software),
/// Q4_K and Q6_K on the CPU in its own k-quant kernel for one input row ([`KMatrix`]: a
/// generated token, on the engine's threads rather than candle's barrier pool) and in
/// candle's `QMatMul` for a prompt (its x86 repacked kernels, VNNI where the CPU has it, are
/// faster there; both compute the same values, see [`super::kquant`]), other types and
/// devices on candle's `QMatMul`.
#[derive(Clone)]
enum Linear {
    Q8(Arc<Q8Matrix>),
    K(Arc<KMatrix>, QMatMul),
    Candle(QMatMul),
}

/// The engine's kernels for this CPU, chosen once at load.
#[derive(Clone, Copy)]
struct Kernels {
    q8: Q8Kernel,
    k: KKernel,
}

impl Linear {
    fn new(tensor: QTensor, kernels: Kernels, device: &Device) -> candle_core::Result<Self> {
        let tensor = widen_q5_0(tensor, device)?;
        if let Some(matrix) = Self::packed(&tensor, kernels.q8, device)? {
            return Ok(Linear::Q8(Arc::new(matrix)));
        }
        if let Some(matrix) = Self::k_packed(&tensor, kernels.k, device)? {
            return Ok(Linear::K(Arc::new(matrix), QMatMul::from_qtensor(tensor)?));
        }
        Ok(Linear::Candle(QMatMul::from_qtensor(tensor)?))
    }

    /// `tensor` repacked for the engine's k-quant kernel when it is a Q4_K or Q6_K matrix on
    /// the CPU.
    fn k_packed(
        tensor: &QTensor,
        kernel: KKernel,
        device: &Device,
    ) -> candle_core::Result<Option<KMatrix>> {
        let (rows, cols) = match tensor.shape().dims() {
            &[rows, cols] => (rows, cols),
            _ => return Ok(None),
        };
        if !device.is_cpu() {
            return Ok(None);
        }
        let matrix = match tensor.dtype() {
            GgmlDType::Q4K => KMatrix::from_q4_k(&tensor.data()?, rows, cols, kernel),
            GgmlDType::Q6K => KMatrix::from_q6_k(&tensor.data()?, rows, cols, kernel),
            _ => return Ok(None),
        };
        matrix.map(Some).map_err(candle_core::Error::Msg)
    }

    /// `tensor` packed for the engine's kernel when it is a Q8_0 matrix on the CPU.
    fn packed(
        tensor: &QTensor,
        kernel: Q8Kernel,
        device: &Device,
    ) -> candle_core::Result<Option<Q8Matrix>> {
        let (rows, cols) = match tensor.shape().dims() {
            &[rows, cols] => (rows, cols),
            _ => return Ok(None),
        };
        if tensor.dtype() != GgmlDType::Q8_0 || !device.is_cpu() {
            return Ok(None);
        }
        Q8Matrix::from_q8_0(&tensor.data()?, rows, cols, kernel)
            .map(Some)
            .map_err(candle_core::Error::Msg)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (rows, cols) = match self {
            Linear::Candle(matmul) => return matmul.forward(x),
            Linear::Q8(matrix) => (matrix.rows(), matrix.cols()),
            Linear::K(matrix, matmul) => {
                if x.elem_count() != matrix.cols() {
                    return matmul.forward(x);
                }
                (matrix.rows(), matrix.cols())
            }
        };
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&cols) {
            candle_core::bail!("input {:?} for a matrix of {cols} columns", x.shape());
        }
        let m = x.elem_count() / cols;
        let values = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let out = match self {
            Linear::Q8(matrix) => matrix.matmul_t(&values, m),
            Linear::K(matrix, _) => matrix.matmul_t(&values, m),
            Linear::Candle(_) => unreachable!("returned above"),
        };
        *dims.last_mut().expect("checked above") = rows;
        Tensor::from_vec(out, dims, x.device())
    }
}

/// Products of one input with several matrices: attention's q, k and v, the feed-forward's
/// gate and up.
///
/// Why: a generated token's products are small (Gemma 3 270M: 0.2-1.4 MB of weights each) and
/// each was its own parallel loop, whose hand-off between threads (waking the other thread,
/// waiting for it) cost about as much as the work; every one also quantized the same input
/// again. When all are Q8_0 on the CPU with the same width (the 270M file's q, k, v, gate and
/// up, Q5_0 widened), they are stacked at load into one matrix holding their rows one after
/// the other: one quantization, one parallel loop, and the same values bit for bit, since
/// every output row is computed on its own (see [`super::q8`]).
#[derive(Clone)]
enum Projections {
    /// One matrix with the parts' rows in order, and each part's row count.
    Stacked(Arc<Q8Matrix>, Vec<usize>),
    Each(Vec<Linear>),
}

impl Projections {
    fn new(tensors: Vec<QTensor>, kernels: Kernels, device: &Device) -> candle_core::Result<Self> {
        let tensors = tensors
            .into_iter()
            .map(|tensor| widen_q5_0(tensor, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if let Some(stacked) = Self::stacked(&tensors, kernels.q8, device)? {
            return Ok(stacked);
        }
        let each = tensors
            .into_iter()
            .map(|tensor| Linear::new(tensor, kernels, device));
        Ok(Projections::Each(each.collect::<candle_core::Result<_>>()?))
    }

    /// The tensors stacked into one packed matrix when all are Q8_0 of one width on the CPU.
    fn stacked(
        tensors: &[QTensor],
        kernel: Q8Kernel,
        device: &Device,
    ) -> candle_core::Result<Option<Self>> {
        let dims: Vec<&[usize]> = tensors.iter().map(|t| t.shape().dims()).collect();
        let cols = match dims.first() {
            Some(&[_, cols]) => *cols,
            _ => return Ok(None),
        };
        let stackable = device.is_cpu()
            && tensors.iter().all(|t| t.dtype() == GgmlDType::Q8_0)
            && dims.iter().all(|d| d.len() == 2 && d[1] == cols);
        if !stackable {
            return Ok(None);
        }
        let rows: Vec<usize> = dims.iter().map(|d| d[0]).collect();
        let mut data = Vec::new();
        for tensor in tensors {
            data.extend_from_slice(&tensor.data()?);
        }
        let matrix = Q8Matrix::from_q8_0(&data, rows.iter().sum(), cols, kernel)
            .map_err(candle_core::Error::Msg)?;
        Ok(Some(Projections::Stacked(Arc::new(matrix), rows)))
    }

    /// `x` times each matrix, in the order they were given.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let (matrix, parts) = match self {
            Projections::Each(linears) => return linears.iter().map(|l| l.forward(x)).collect(),
            Projections::Stacked(matrix, parts) => (matrix, parts),
        };
        let cols = matrix.cols();
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&cols) {
            candle_core::bail!("input {:?} for a matrix of {cols} columns", x.shape());
        }
        let m = x.elem_count() / cols;
        let values = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let out = matrix.matmul_t(&values, m);
        let mut start = 0;
        parts
            .iter()
            .map(|&rows| {
                // Row by row as slices (a copy per row, not per value: a prompt's parts are
                // megabytes).
                let mut part = Vec::with_capacity(m * rows);
                for row in out.chunks_exact(matrix.rows()) {
                    part.extend_from_slice(&row[start..start + rows]);
                }
                start += rows;
                *dims.last_mut().expect("checked above") = rows;
                Tensor::from_vec(part, dims.as_slice(), x.device())
            })
            .collect()
    }
}

/// The token embedding table: packed when it is Q8_0 on the CPU (it is then the same matrix as
/// the tied output layer, held once), else candle's quantized tensor.
#[derive(Clone)]
enum Embedding {
    Q8(Arc<Q8Matrix>),
    Table(Arc<QTensor>),
}

/// llama.cpp's Gemma 3 constants: every sixth layer attends globally, the others within the
/// sliding window and with RoPE base 10,000.
const SLIDING_WINDOW_PATTERN: usize = 6;
const SLIDING_ROPE_BASE: f32 = 10_000.0;

#[derive(Debug)]
struct Config {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    window: usize,
    rope_base: f32,
    /// Linear RoPE scaling of the global layers (`rope.scaling.factor`, the 4B-27B models).
    rope_scale: f32,
    attention_scale: f64,
}

#[derive(Clone)]
struct Layer {
    attn_norm: Tensor,
    /// q, k and v.
    qkv: Projections,
    o: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    /// gate and up.
    gate_up: Projections,
    down: Linear,
    post_ffn_norm: Tensor,
    sliding: bool,
    cache: Option<KvCache>,
}

/// One layer's keys and values, preallocated and written in place: each step copies only its
/// own new rows (concatenating copied the whole cache at every token), and attention reads a
/// view of the first `len` positions, laid out in rows as a concatenated cache was, so the
/// matmuls get the same operands and compute the same bits.
///
/// Clones (a session's forks) share the buffers until one of them writes: the first writer
/// whose buffers are shared moves to a copy of its own first (copy on write, told by the
/// count of `owners`), so one fork never writes over positions another one reads.
#[derive(Clone)]
struct KvCache {
    /// (1, kv_heads, capacity, head_dim) each.
    k: Tensor,
    v: Tensor,
    len: usize,
    owners: Arc<()>,
}

/// Positions a fresh cache holds beyond its first input.
const KV_CACHE_ROOM: usize = 512;

impl KvCache {
    /// A cache holding `k` and `v` (1, kv_heads, seq, head_dim) with room for more.
    fn new(k: &Tensor, v: &Tensor) -> candle_core::Result<Self> {
        let seq = k.dim(2)?;
        let mut cache = Self {
            k: k.clone(),
            v: v.clone(),
            len: 0,
            owners: Arc::new(()),
        };
        cache.reallocate(seq + KV_CACHE_ROOM)?;
        cache.append(k, v)?;
        Ok(cache)
    }

    /// Fresh buffers of `capacity` positions holding the first `len` of the current ones.
    fn reallocate(&mut self, capacity: usize) -> candle_core::Result<()> {
        let (one, heads, _, head_dim) = self.k.dims4()?;
        let fresh = |old: &Tensor| -> candle_core::Result<Tensor> {
            let buffer =
                Tensor::zeros((one, heads, capacity, head_dim), old.dtype(), old.device())?;
            if self.len > 0 {
                buffer.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            Ok(buffer)
        };
        self.k = fresh(&self.k)?;
        self.v = fresh(&self.v)?;
        self.owners = Arc::new(());
        Ok(())
    }

    /// Writes `k` and `v` (1, kv_heads, seq, head_dim) after the cached positions and returns
    /// views of all of them.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let capacity = self.k.dim(2)?;
        if self.len + seq > capacity {
            self.reallocate((2 * capacity).max(self.len + seq + KV_CACHE_ROOM))?;
        } else if Arc::strong_count(&self.owners) > 1 {
            self.reallocate(capacity)?;
        }
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += seq;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

/// The weights (shared between clones) and one sequence's KV cache (per clone).
#[derive(Clone)]
pub struct Gemma3 {
    config: Arc<Config>,
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    device: Device,
}

impl Gemma3 {
    pub fn load<R: std::io::Read + std::io::Seek>(
        info: &GgufInfo,
        content: &Content,
        reader: &mut R,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let arch = &info.architecture;
        let get = |key: &str| {
            info.get_u64(&format!("{arch}.{key}"))
                .map(|v| v as usize)
                .ok_or_else(|| candle_core::Error::Msg(format!("no {arch}.{key} in the metadata")))
        };
        let float = |key: &str| match info.get(&format!("{arch}.{key}")) {
            Some(value) => value.to_f32().ok(),
            None => None,
        };
        let hidden = get("embedding_length")?;
        let heads = get("attention.head_count")?;
        let blocks = get("block_count")?;
        let head_dim = get("attention.key_length").unwrap_or(hidden / heads);
        // llama.cpp: Gemma 3 27B (62 layers) scales queries by hidden/heads, the others by the
        // head size.
        let attention_scale = match blocks {
            62 => 1.0 / ((hidden / heads) as f64).sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        };
        let linear_scaling = info
            .get_str(&format!("{arch}.rope.scaling.type"))
            .is_none_or(|kind| kind == "linear");
        let config = Config {
            hidden,
            heads,
            kv_heads: get("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f64,
            window: get("attention.sliding_window")?,
            rope_base: float("rope.freq_base").unwrap_or(1_000_000.0),
            rope_scale: match (linear_scaling, float("rope.scaling.factor")) {
                (true, Some(factor)) if factor > 0.0 => 1.0 / factor,
                _ => 1.0,
            },
            attention_scale,
        };
        let kernels = Kernels {
            q8: Q8Kernel::detect(),
            k: KKernel::detect(),
        };
        let kernel = kernels.q8;
        let mut tensor = |name: &str| content.tensor(reader, name, device);
        let table = tensor("token_embd.weight")?;
        let embedding = match Linear::packed(&table, kernel, device)? {
            Some(matrix) => Embedding::Q8(Arc::new(matrix)),
            None => Embedding::Table(Arc::new(table)),
        };
        let dense = |q: QTensor| q.dequantize(device);
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = format!("blk.{i}");
            let mut weights = |names: &[&str]| {
                let tensors = names
                    .iter()
                    .map(|name| tensor(&format!("{p}.{name}.weight")));
                tensors.collect::<candle_core::Result<Vec<_>>>()
            };
            let qkv = Projections::new(weights(&["attn_q", "attn_k", "attn_v"])?, kernels, device)?;
            let gate_up = Projections::new(weights(&["ffn_gate", "ffn_up"])?, kernels, device)?;
            let mut matmul =
                |name: &str| Linear::new(tensor(&format!("{p}.{name}"))?, kernels, device);
            let o = matmul("attn_output.weight")?;
            let down = matmul("ffn_down.weight")?;
            let mut norm = |name: &str| dense(tensor(&format!("{p}.{name}"))?);
            layers.push(Layer {
                attn_norm: norm("attn_norm.weight")?,
                q_norm: norm("attn_q_norm.weight")?,
                k_norm: norm("attn_k_norm.weight")?,
                post_attn_norm: norm("post_attention_norm.weight")?,
                ffn_norm: norm("ffn_norm.weight")?,
                post_ffn_norm: norm("post_ffw_norm.weight")?,
                qkv,
                o,
                gate_up,
                down,
                sliding: (i + 1) % SLIDING_WINDOW_PATTERN != 0,
                cache: None,
            });
        }
        let norm = dense(tensor("output_norm.weight")?)?;
        // Tied head: llama.cpp uses token_embd when the file has no output.weight.
        let output = match (
            content.tensor_infos.contains_key("output.weight"),
            &embedding,
        ) {
            (true, _) => Linear::new(tensor("output.weight")?, kernels, device)?,
            (false, Embedding::Q8(matrix)) => Linear::Q8(matrix.clone()),
            (false, Embedding::Table(table)) => Linear::Candle(QMatMul::from_arc(table.clone())?),
        };
        Ok(Self {
            config: Arc::new(config),
            embedding,
            layers,
            norm,
            output,
            device: device.clone(),
        })
    }

    /// The embedding rows of `ids`, dequantized row by row (the table stays quantized: 262k
    /// rows of Gemma's vocabulary would take 670 MB as f32).
    fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let table = match &self.embedding {
            Embedding::Table(table) => table,
            Embedding::Q8(matrix) => {
                let vocab = matrix.rows();
                let mut rows = Vec::with_capacity(ids.len() * matrix.cols());
                for &id in ids {
                    if id as usize >= vocab {
                        candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
                    }
                    rows.extend(matrix.dequantize_row(id as usize));
                }
                return Tensor::from_vec(rows, (ids.len(), matrix.cols()), &self.device);
            }
        };
        let dtype = table.dtype();
        let hidden = self.config.hidden;
        let row_bytes = hidden / dtype.block_size() * dtype.type_size();
        let data = table.data()?;
        let vocab = data.len() / row_bytes;
        let mut rows = Vec::with_capacity(ids.len() * row_bytes);
        for &id in ids {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
            }
            rows.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
        }
        let storage = QStorage::from_data(std::borrow::Cow::Owned(rows), &Device::Cpu, dtype)?;
        let rows = QTensor::new(storage, (ids.len(), hidden))?.dequantize(&Device::Cpu)?;
        rows.to_device(&self.device)
    }

    pub fn clear_kv_cache(&mut self) {
        for layer in &mut self.layers {
            layer.cache = None;
        }
    }

    /// The logits after the last of `ids`, which sit at `position..position + ids.len()`.
    ///
    /// One generated token runs as a [`Team`]: on one of rayon's threads, with a second one
    /// spinning for its products' parallel loops instead of sleeping between them, and every
    /// other parallel loop of the pass (candle's RoPE and softmax over heads) starting from
    /// inside the pool rather than being handed from the caller to a worker and back (two
    /// thread wake-ups per loop, a few hundred per token before).
    pub fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        match input.elem_count() {
            1 => Team::run(|| self.forward_here(input, position)),
            _ => self.forward_here(input, position),
        }
    }

    fn forward_here(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor> {
        let ids = input.flatten_all()?.to_vec1::<u32>()?;
        let config = self.config.clone();
        let c = &*config;
        let seq = ids.len();
        if position == 0 {
            self.clear_kv_cache();
        }
        let mut x = (self.embed(&ids)? * (c.hidden as f64).sqrt())?.unsqueeze(0)?;
        let (global_cos, global_sin) =
            rope_tables(c, c.rope_base, c.rope_scale, position, seq, &self.device)?;
        let (local_cos, local_sin) =
            rope_tables(c, SLIDING_ROPE_BASE, 1.0, position, seq, &self.device)?;
        let global_mask = mask(seq, position, None, &self.device)?;
        let local_mask = mask(seq, position, Some(c.window), &self.device)?;
        for layer in &mut self.layers {
            let (cos, sin, mask) = match layer.sliding {
                true => (&local_cos, &local_sin, &local_mask),
                false => (&global_cos, &global_sin, &global_mask),
            };
            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.eps as f32)?;
            let [q, k, v] = parts(layer.qkv.forward(&h)?)?;
            let q = q.reshape((1, seq, c.heads, c.head_dim))?;
            let k = k.reshape((1, seq, c.kv_heads, c.head_dim))?;
            let v = v.reshape((1, seq, c.kv_heads, c.head_dim))?;
            let q = candle_nn::ops::rms_norm(&q, &layer.q_norm, c.eps as f32)?.transpose(1, 2)?;
            let k = candle_nn::ops::rms_norm(&k, &layer.k_norm, c.eps as f32)?.transpose(1, 2)?;
            let v = v.transpose(1, 2)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope(&q.contiguous()?, cos, sin)?;
            let k = candle_nn::rotary_emb::rope(&k.contiguous()?, cos, sin)?;
            let (k, v) = match &mut layer.cache {
                Some(cache) => cache.append(&k, &v)?,
                None => {
                    let cache = KvCache::new(&k, &v)?;
                    let views = (
                        cache.k.narrow(2, 0, cache.len)?,
                        cache.v.narrow(2, 0, cache.len)?,
                    );
                    layer.cache = Some(cache);
                    views
                }
            };
            // Grouped-query attention without copying the cache per query head (as llama.cpp
            // broadcasts): the `rep` query heads that share a KV head are one matrix of
            // `rep * seq` rows against it. Copying K and V four times per layer and token
            // (Gemma 3 270M: 4 query heads, 1 KV head) moved more bytes than the layer's weights.
            let rep = c.heads / c.kv_heads;
            let kv_len = k.dim(2)?;
            let q = q.reshape((1, c.kv_heads, rep * seq, c.head_dim))?;
            let scores = (q.matmul(&k.t()?)? * c.attention_scale)?;
            let scores = match mask {
                Some(mask) => scores
                    .reshape((1, c.kv_heads, rep, seq, kv_len))?
                    .broadcast_add(mask)?
                    .reshape((1, c.kv_heads, rep * seq, kv_len))?,
                None => scores,
            };
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = weights
                .matmul(&v)?
                .reshape((1, c.heads, seq, c.head_dim))?
                .transpose(1, 2)?
                .reshape((1, seq, c.heads * c.head_dim))?;
            let attended = layer.o.forward(&attended)?;
            let attended =
                candle_nn::ops::rms_norm(&attended, &layer.post_attn_norm, c.eps as f32)?;
            x = (attended + residual)?;
            let residual = x.clone();
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, c.eps as f32)?;
            let [gate, up] = parts(layer.gate_up.forward(&h)?)?;
            let gated = gelu_f16_times(&gate, &up)?;
            let out = layer.down.forward(&gated)?;
            let out = candle_nn::ops::rms_norm(&out, &layer.post_ffn_norm, c.eps as f32)?;
            x = (out + residual)?;
        }
        let last = x.narrow(1, seq - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, c.eps as f32)?;
        self.output.forward(&last)?.squeeze(1)?.to_dtype(DType::F32)
    }
}

/// The `N` products of a [`Projections`] as an array.
fn parts<const N: usize>(products: Vec<Tensor>) -> candle_core::Result<[Tensor; N]> {
    let count = products.len();
    products
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("{count} products, not {N}")))
}

/// NEOX-style RoPE tables (what llama.cpp uses for Gemma) for `seq` positions from `start`.
fn rope_tables(
    c: &Config,
    base: f32,
    scale: f32,
    start: usize,
    seq: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = c.head_dim / 2;
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for pos in start..start + seq {
        for i in 0..half {
            let inv_freq = base.powf(-((2 * i) as f32) / c.head_dim as f32);
            let angle = pos as f32 * scale * inv_freq;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq, half), device)?,
        Tensor::from_vec(sin, (seq, half), device)?,
    ))
}

/// The additive mask of `seq` queries from `start` over all `start + seq` keys: causal, and
/// within `window` (llama.cpp: key j hidden when i - j >= window). `None` when nothing is hidden.
fn mask(
    seq: usize,
    start: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    let kv_len = start + seq;
    let mut values = vec![0f32; seq * kv_len];
    let mut any = false;
    for qi in 0..seq {
        let i = start + qi;
        for j in 0..kv_len {
            let hidden = j > i || window.is_some_and(|w| j + w <= i);
            if hidden {
                values[qi * kv_len + j] = f32::NEG_INFINITY;
                any = true;
            }
        }
    }
    if !any {
        return Ok(None);
    }
    Tensor::from_vec(values, (seq, kv_len), device).map(Some)
}

/// GELU (tanh form) as ggml's CPU backend computes it, times `up` (the gated feed-forward):
/// for -10 < x < 10 looked up in a table indexed by the input rounded to f16, holding f16
/// values; x itself above 10, 0 below -10. Exact f32 GELU moves the logits of the real 270M
/// model by ~0.1 from llama.cpp's; with the same rounding they agree to 5e-5 on the fixtures.
///
/// One pass on the host over a 65,536-entry table (as ggml does) instead of ten candle ops per
/// layer: those computed `tanh` for every element of every prompt token (6% of a bench run in
/// `expm1f`) and each woke candle's thread pool.
fn gelu_f16_times(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if gate.shape() != up.shape() {
        candle_core::bail!("gate {:?} and up {:?} differ", gate.shape(), up.shape());
    }
    let table = gelu_f16_table();
    let x = gate.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let up = up.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(x.len());
    let mut halves = [f16::ZERO; 256];
    for (x, up) in x.chunks(halves.len()).zip(up.chunks(halves.len())) {
        let halves = &mut halves[..x.len()];
        // Vectorized (F16C) where the CPU has it; rounds to nearest even like `to_dtype`.
        halves.convert_from_f32_slice(x);
        out.extend(x.iter().zip(halves.iter()).zip(up).map(|((&x, h), &up)| {
            let gelu = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                table[h.to_bits() as usize]
            };
            gelu * up
        }));
    }
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// GELU (candle's f32 tanh formula) of every f16 value, rounded to f16, indexed by its bits.
fn gelu_f16_table() -> &'static [f32] {
    // candle's constant, and its order of operations, so the values are bit for bit the same.
    #[allow(clippy::excessive_precision)]
    const SQRT_TWO_OVER_PI: f32 = 0.79788456080286535587989211986876373;
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let v = f16::from_bits(bits).to_f32();
                let gelu =
                    0.5 * v * (1.0 + (SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)).tanh());
                f16::from_f32(gelu).to_f32()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place cache holds what concatenation held, across a growth of its buffers, and
    /// a clone (a fork) that writes does not change what the original reads.
    #[test]
    fn kv_cache_equals_concatenation_and_forks_do_not_share_writes() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let step = |seq: usize, seed: f32| -> candle_core::Result<Tensor> {
            let values: Vec<f32> = (0..2 * seq * 3).map(|i| seed + i as f32).collect();
            Tensor::from_vec(values, (1, 2, seq, 3), &device)
        };
        let first = step(4, 0.0)?;
        let mut cache = KvCache::new(&first, &(&first * 2.0)?)?;
        let mut concatenated = first.clone();
        // Past the first buffer's room: the cache moves to a bigger one.
        for (i, seq) in [1, KV_CACHE_ROOM + 3, 1].into_iter().enumerate() {
            let k = step(seq, 1000.0 * (i + 1) as f32)?;
            let (all_k, all_v) = cache.append(&k, &(&k * 2.0)?)?;
            concatenated = Tensor::cat(&[&concatenated, &k], 2)?;
            assert_eq!(
                all_k.squeeze(0)?.to_vec3::<f32>()?,
                concatenated.squeeze(0)?.to_vec3::<f32>()?
            );
            let doubled = (&concatenated * 2.0)?.squeeze(0)?;
            assert_eq!(
                all_v.squeeze(0)?.to_vec3::<f32>()?,
                doubled.to_vec3::<f32>()?
            );
        }
        let mut fork = cache.clone();
        let before = cache
            .k
            .narrow(2, 0, cache.len)?
            .squeeze(0)?
            .to_vec3::<f32>();
        let theirs = step(1, -5.0)?;
        fork.append(&theirs, &theirs)?;
        let ours = step(1, 7.0)?;
        let (all_k, _) = cache.append(&ours, &ours)?;
        let expected = Tensor::cat(&[&concatenated, &ours], 2)?;
        assert_eq!(
            all_k.squeeze(0)?.to_vec3::<f32>()?,
            expected.squeeze(0)?.to_vec3::<f32>()?
        );
        assert_eq!(before?, concatenated.squeeze(0)?.to_vec3::<f32>()?);
        // The fork still reads its own last row, not the original's.
        let fork_last = fork.k.narrow(2, fork.len - 1, 1)?.squeeze(0)?;
        assert_eq!(
            fork_last.to_vec3::<f32>()?,
            theirs.squeeze(0)?.to_vec3::<f32>()?
        );
        Ok(())
    }

    /// A Q5_0 matrix widened to Q8_0 holds exactly the same values, and its products differ
    /// only by the order of float accumulation.
    #[test]
    fn q5_0_widens_to_q8_0_exactly() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let weights = Tensor::randn(0f32, 1.0, (48, 640), &device)?;
        let q5 = QTensor::quantize(&weights, GgmlDType::Q5_0)?;
        let before = q5.dequantize(&device)?;
        let q8 = widen_q5_0(QTensor::quantize(&weights, GgmlDType::Q5_0)?, &device)?;
        assert_eq!(q8.dtype(), GgmlDType::Q8_0);
        let after = q8.dequantize(&device)?;
        let same = before.eq(&after)?.to_dtype(DType::F32)?.mean_all()?;
        assert_eq!(same.to_scalar::<f32>()?, 1.0, "every value kept");

        let x = Tensor::randn(0f32, 1.0, (3, 640), &device)?;
        let y5 = QMatMul::from_qtensor(q5)?.forward(&x)?;
        let y8 = QMatMul::from_qtensor(q8)?.forward(&x)?;
        let gap = (y5 - &y8)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = y8.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            gap <= scale * 1e-5,
            "products differ by {gap} (largest {scale})"
        );
        Ok(())
    }

    /// The table lookup gives exactly what candle's ops give: the input rounded to f16, candle's
    /// f32 GELU, rounded to f16; 0 at or below -10, the input at or above 10.
    #[test]
    fn gelu_table_equals_candle_ops() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let mut values: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.00731).collect();
        values.extend([
            -10.0, 10.0, -10.001, 10.001, -9.999, 9.999, 0.0, -0.0, 1e-8, 65504.0,
        ]);
        let x = Tensor::new(values.as_slice(), &device)?;
        let up = Tensor::randn(0f32, 1.0, values.len(), &device)?;
        let rounded = x
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?
            .gelu()?
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?;
        let zeros = x.zeros_like()?;
        let low = x.le(-10f32)?.where_cond(&zeros, &rounded)?;
        let expected = (x.ge(10f32)?.where_cond(&x, &low)? * &up)?.to_vec1::<f32>()?;
        let got = gelu_f16_times(&x, &up)?.to_vec1::<f32>()?;
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "x = {}: {g} vs {e}", values[i]);
        }
        Ok(())
    }

    /// Other types pass through untouched.
    #[test]
    fn only_q5_0_is_widened() -> candle_core::Result<()> {
        let device = Device::Cpu;
        let weights = Tensor::randn(0f32, 1.0, (4, 256), &device)?;
        let q4k = widen_q5_0(QTensor::quantize(&weights, GgmlDType::Q4K)?, &device)?;
        assert_eq!(q4k.dtype(), GgmlDType::Q4K);
        Ok(())
    }
}
