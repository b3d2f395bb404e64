//! The linear layer `y = x Wᵀ + b` and the token-embedding table, on the fastest path the device
//! offers.
//!
//! f32 on an x86-64 CPU with AVX2 or AVX-512: the weight is packed once at load time and every
//! product runs through [`super::gemm`] (2-8x candle's matmul on a decoder step's products;
//! `examples/gemm_bench.rs` measures it). When the output layer is tied to the token embedding (Marian, BART, T5 v1.0), the
//! embedding looks its rows up in the head's packed copy, so the largest matrix is held once.
//!
//! Elsewhere (other dtypes, GPUs, other CPUs) candle-nn's layers run, with one rearrangement:
//! for skinny products (a decoder step's few rows) on the CPU, the gemm crate behind candle is
//! much faster computing `W xᵀ` than `x Wᵀ` (measured: 5.3 ms instead of 19 ms for 8 rows of
//! opus-mt's output layer, transposition included; from 128 rows on the plain order wins), so
//! with at most [`SKINNY_ROWS`] rows the product is taken as `(W xᵀ)ᵀ`.
//!
//! Under [`WeightPrecision::Int8`] (`--dtype int8`, the CPU in f32 only) every layer is
//! quantized when it loads and runs through [`super::qgemm`]. A tied embedding then keeps its
//! own f32 table: its rows are looked up exactly as in f32, and the int8 head is only a quarter
//! of the table's size on top.

use std::sync::Arc;

use candle_core::{DType, Module, Result, Storage, Tensor, TensorId};
use candle_nn::Activation;
use rayon::prelude::*;

use super::gemm::{Kernel, PackedMatrix};
use super::qgemm::{QKernel, QuantizedMatrix};

/// How the weights of the linear layers are held: as loaded (the dtype of the model), or
/// quantized to int8 at load time with f32 activations around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightPrecision {
    /// The model's dtype: f32, f16 or bf16.
    #[default]
    Float,
    /// int8 weights, one scale per output feature; f32 everywhere else. CPU only.
    Int8,
}

impl WeightPrecision {
    /// What a run reports as its dtype: "int8", or the float dtype's name.
    pub fn label(self, dtype: DType) -> String {
        match self {
            Self::Float => format!("{dtype:?}").to_lowercase(),
            Self::Int8 => "int8".to_string(),
        }
    }
}

/// Most rows for which the transposed product is used (measured crossover: between 64 and 128).
pub const SKINNY_ROWS: usize = 64;

#[derive(Debug, Clone)]
pub struct Linear {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Candle(candle_nn::Linear),
    Packed {
        weight: Arc<PackedMatrix>,
        bias: Option<Arc<Vec<f32>>>,
        /// The tensor the weight was packed from (to recognise a tied embedding).
        source: TensorId,
    },
    Int8 {
        weight: Arc<QuantizedMatrix>,
        bias: Option<Arc<Vec<f32>>>,
    },
}

impl Linear {
    /// `weight` (out_features, in_features); packed when it is f32 on a CPU with a kernel.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        let repr = match Self::pack(&weight, bias.as_ref()) {
            Ok(Some(repr)) => repr,
            _ => Repr::Candle(candle_nn::Linear::new(weight, bias)),
        };
        Self { repr }
    }

    /// `weight` (out_features, in_features) held as `precision` says. int8 needs an f32
    /// weight on the CPU (the loader refuses `--dtype int8` elsewhere); it is an error here
    /// rather than a silent fall-back to f32.
    pub fn load(weight: Tensor, bias: Option<Tensor>, precision: WeightPrecision) -> Result<Self> {
        match precision {
            WeightPrecision::Float => Ok(Self::new(weight, bias)),
            WeightPrecision::Int8 => {
                let (rows, cols) = weight.dims2()?;
                let kernel = QKernel::detect();
                let quantize = |w: &[f32]| QuantizedMatrix::quantize(w, rows, cols, kernel);
                let Some(quantized) = with_f32(&weight.contiguous()?, quantize)? else {
                    candle_core::bail!(
                        "int8 weights are made from f32 weights on the CPU, not {:?} on {:?}",
                        weight.dtype(),
                        weight.device().location()
                    );
                };
                let bias = bias.map(|b| bias_values(&b, rows)).transpose()?;
                Ok(Self {
                    repr: Repr::Int8 {
                        weight: Arc::new(quantized),
                        bias: bias.map(Arc::new),
                    },
                })
            }
        }
    }

    fn pack(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Repr>> {
        let Some(kernel) = Kernel::detect() else {
            return Ok(None);
        };
        let (rows, cols) = weight.dims2()?;
        let Some(packed) = with_f32(weight, |w| PackedMatrix::pack(w, rows, cols, kernel))? else {
            return Ok(None);
        };
        let bias = match bias {
            None => None,
            Some(b) => match with_f32(&b.flatten_all()?, <[f32]>::to_vec)? {
                Some(b) if b.len() == rows => Some(Arc::new(b)),
                _ => return Ok(None),
            },
        };
        Ok(Some(Repr::Packed {
            weight: Arc::new(packed),
            bias,
            source: weight.id(),
        }))
    }

    /// Whether [`Self::forward_blocks`] runs: an f32 layer packed for mtsum's kernels.
    pub fn packed_f32(&self) -> bool {
        matches!(self.repr, Repr::Packed { .. })
    }

    /// The product of `x` (rows, in_features) handed to `f(first_column, values)` a block of
    /// `block` output columns at a time, (rows, width) row-major, never held whole (see
    /// [`PackedMatrix::matmul_t_blocks`]); the values are [`Module::forward`]'s bit for bit.
    /// Only for a layer that is [`Self::packed_f32`].
    pub fn forward_blocks(
        &self,
        x: &Tensor,
        block: usize,
        f: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> Result<()> {
        let Repr::Packed { weight, bias, .. } = &self.repr else {
            candle_core::bail!("a product by blocks needs an f32 layer packed for mtsum's kernels");
        };
        let (rows, _) = x.dims2()?;
        let x = x.contiguous()?;
        let bias = bias.as_deref().map(Vec::as_slice);
        match with_f32(&x, |a| weight.matmul_t_blocks(a, rows, bias, block, f))? {
            Some(()) => Ok(()),
            None => candle_core::bail!("a packed f32 layer got a {:?} input", x.dtype()),
        }
    }

    /// The int8 kernel this layer runs, if it was quantized.
    pub fn int8_kernel(&self) -> Option<QKernel> {
        match &self.repr {
            Repr::Int8 { weight, .. } => Some(weight.kernel()),
            _ => None,
        }
    }

    pub fn out_features(&self) -> usize {
        match &self.repr {
            Repr::Candle(l) => l.weight().dim(0).unwrap_or(0),
            Repr::Packed { weight, .. } => weight.rows(),
            Repr::Int8 { weight, .. } => weight.rows(),
        }
    }

    /// The packed weight, if this layer was packed from `tensor` itself.
    fn packed_from(&self, tensor: &Tensor) -> Option<Arc<PackedMatrix>> {
        match &self.repr {
            Repr::Packed { weight, source, .. } if *source == tensor.id() => Some(weight.clone()),
            _ => None,
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&inputs, leading)) = dims.split_last() else {
            return match &self.repr {
                Repr::Candle(l) => l.forward(x),
                Repr::Packed { .. } | Repr::Int8 { .. } => {
                    candle_core::bail!("a linear layer needs a vector input")
                }
            };
        };
        let rows: usize = leading.iter().product();
        let mut out_dims = leading.to_vec();
        out_dims.push(self.out_features());
        if let Some(y) = self.host_product(x, rows)? {
            return Tensor::from_vec(y, out_dims, x.device());
        }
        match &self.repr {
            Repr::Packed { .. } | Repr::Int8 { .. } => unreachable!("host_product covers these"),
            Repr::Candle(l) if skinny(x, rows) => {
                let x = x.reshape((rows, inputs))?;
                let y = transpose_f32(&l.weight().matmul(&x.t()?)?)?;
                let y = match l.bias() {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                y.reshape(out_dims)
            }
            Repr::Candle(l) => l.forward(x),
        }
    }
}

impl Linear {
    /// The product on mtsum's own kernels (a packed f32 or an int8 layer), as the host values of
    /// `rows` output rows; `None` for a layer that runs on candle.
    fn host_product(&self, x: &Tensor, rows: usize) -> Result<Option<Vec<f32>>> {
        let y = match &self.repr {
            Repr::Packed { weight, bias, .. } => {
                let x = x.contiguous()?;
                with_f32(&x, |a| {
                    weight.matmul_t(a, rows, bias.as_deref().map(Vec::as_slice))
                })?
            }
            Repr::Int8 { weight, bias } => {
                let x = x.contiguous()?;
                with_f32(&x, |a| {
                    weight.matmul_t(a, rows, bias.as_deref().map(Vec::as_slice))
                })?
            }
            Repr::Candle(_) => return Ok(None),
        };
        match y {
            Some(y) => Ok(Some(y)),
            None => candle_core::bail!("a packed f32 or int8 layer got a {:?} input", x.dtype()),
        }
    }

    /// `act(self.forward(x))`. On mtsum's own kernels the activation runs on the product's
    /// values as they are, on rayon's threads (warm from the product), with the very formula of
    /// candle's op, so the values are the same bit for bit. Through candle, a feed-forward
    /// block's activation over a decoder step (64 rows x 2048 features) is one of the few
    /// element-wise ops large enough for candle's barrier pool, whose thread then has to be
    /// woken and waited for at every layer of every step (about a tenth of a beam search in
    /// the profile), and it allocates a second buffer of the product's size.
    pub fn forward_activated(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let Some(f) = host_activation(act) else {
            return act.forward(&self.forward(x)?);
        };
        let Some((&_, leading)) = x.dims().split_last() else {
            return act.forward(&self.forward(x)?);
        };
        let rows: usize = leading.iter().product();
        let Some(mut y) = self.host_product(x, rows)? else {
            return act.forward(&self.forward(x)?);
        };
        const CHUNK: usize = 4096;
        crate::parallel::for_each_chunk_mut(&mut y, CHUNK, |_, values| f(values));
        let mut out_dims = leading.to_vec();
        out_dims.push(self.out_features());
        Tensor::from_vec(y, out_dims, x.device())
    }
}

/// candle's op for `act` applied in place to a run of values, bit for bit, for the
/// activations whose candle op is one unary function (candle-core 0.11's `Silu` and `Relu`
/// ops); `None` for the others, which keep running through candle.
fn host_activation(act: Activation) -> Option<fn(&mut [f32])> {
    match act {
        Activation::Silu => Some(super::expf::silu_in_place),
        Activation::Relu => Some(|values| values.iter_mut().for_each(|v| *v = v.max(0f32))),
        _ => None,
    }
}

fn skinny(x: &Tensor, rows: usize) -> bool {
    rows <= SKINNY_ROWS && x.device().is_cpu() && x.dtype() == DType::F32
}

/// A token-embedding table: rows looked up by id.
#[derive(Debug, Clone)]
pub enum TokenTable {
    Plain(candle_nn::Embedding),
    /// The packed copy held by a tied output layer.
    Packed(Arc<PackedMatrix>),
}

impl TokenTable {
    /// `table` (vocab, dim). When `head` was packed from this very tensor (tied weights), the
    /// lookups read the head's copy and `table` itself can be dropped.
    pub fn new(table: Tensor, head: &Linear) -> Result<Self> {
        if let Some(packed) = head.packed_from(&table) {
            return Ok(Self::Packed(packed));
        }
        let dim = table.dim(1)?;
        Ok(Self::Plain(candle_nn::Embedding::new(table, dim)))
    }

    pub fn dtype(&self) -> DType {
        match self {
            Self::Plain(e) => e.embeddings().dtype(),
            Self::Packed(_) => DType::F32,
        }
    }

    /// `ids` (any shape) -> (ids shape..., dim).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let table = match self {
            Self::Plain(e) => return e.forward(ids),
            Self::Packed(table) => table,
        };
        let dim = table.cols();
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut out = vec![0f32; flat.len() * dim];
        for (&id, row) in flat.iter().zip(out.chunks_mut(dim.max(1))) {
            if id as usize >= table.rows() {
                candle_core::bail!(
                    "token id {id} is outside the vocabulary of {}",
                    table.rows()
                );
            }
            table.copy_row(id as usize, row);
        }
        let mut dims = ids.dims().to_vec();
        dims.push(dim);
        Tensor::from_vec(out, dims, ids.device())
    }
}

/// The `rows` f32 values of a bias tensor.
fn bias_values(bias: &Tensor, rows: usize) -> Result<Vec<f32>> {
    let values = bias.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    if values.len() != rows {
        candle_core::bail!("a bias of {} values for {rows} outputs", values.len());
    }
    Ok(values)
}

/// Runs `f` on the f32 values of a contiguous CPU tensor; `None` for any other tensor.
fn with_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> Result<Option<T>> {
    if t.dtype() != DType::F32 || !t.is_contiguous() {
        return Ok(None);
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    let all = cpu.as_slice::<f32>()?;
    Ok(Some(f(&all[start..start + layout.shape().elem_count()])))
}

/// The transpose of a 2-D f32 CPU tensor, copied in cache-sized tiles on rayon's threads
/// (candle's strided copy takes several times longer on the 62,518-wide logits).
fn transpose_f32(t: &Tensor) -> Result<Tensor> {
    let (n, m) = t.dims2()?;
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("transpose_f32 needs a CPU tensor");
    };
    let start = layout.start_offset();
    let src = &cpu.as_slice::<f32>()?[start..start + n * m];
    // dst (m, n): blocks of ROWS destination rows read each 64-byte source line once.
    const ROWS: usize = 16;
    const COLS: usize = 64;
    let mut dst = vec![0f32; n * m];
    dst.par_chunks_mut(n * ROWS)
        .enumerate()
        .for_each(|(block, chunk)| {
            let first = block * ROWS;
            let rows = chunk.len() / n;
            for c0 in (0..n).step_by(COLS) {
                let c1 = (c0 + COLS).min(n);
                for r in 0..rows {
                    let out = &mut chunk[r * n + c0..r * n + c1];
                    for (o, c) in out.iter_mut().zip(c0..c1) {
                        *o = src[c * m + first + r];
                    }
                }
            }
        });
    drop(storage);
    Tensor::from_vec(dst, (m, n), t.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn packed_skinny_and_plain_products_agree() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 19), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 37, &dev).unwrap();
        let packed = Linear::new(w.clone(), Some(b.clone()));
        let skinny = Linear {
            repr: Repr::Candle(candle_nn::Linear::new(w.clone(), Some(b.clone()))),
        };
        let plain = candle_nn::Linear::new(w, Some(b));
        for rows in [1, 5, SKINNY_ROWS, SKINNY_ROWS + 1] {
            let x = Tensor::randn(0f32, 1.0, (rows, 1, 19), &dev).unwrap();
            let want = plain.forward(&x).unwrap();
            for linear in [&packed, &skinny] {
                let got = linear.forward(&x).unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "{rows} rows");
            }
        }
    }

    /// The activation applied on the host gives candle's bits, for every representation.
    #[test]
    fn activated_products_are_candles_activation_of_the_product() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (300, 19), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 300, &dev).unwrap();
        let layers = [
            Linear::new(w.clone(), Some(b.clone())),
            Linear::load(w.clone(), Some(b.clone()), WeightPrecision::Int8).unwrap(),
            Linear {
                repr: Repr::Candle(candle_nn::Linear::new(w, Some(b))),
            },
        ];
        let x = Tensor::randn(0f32, 2.0, (5, 1, 19), &dev).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        for layer in &layers {
            for act in [Activation::Silu, Activation::Relu, Activation::NewGelu] {
                let got = layer.forward_activated(&x, act).unwrap();
                let want = act.forward(&layer.forward(&x).unwrap()).unwrap();
                assert_eq!(got.dims(), &[5, 1, 300]);
                assert_eq!(bits(&got), bits(&want), "{act:?} {:?}", layer.repr);
            }
        }
    }

    #[test]
    fn a_tied_table_reads_the_heads_packed_rows() {
        let dev = Device::Cpu;
        let table = Tensor::randn(0f32, 1.0, (70, 12), &dev).unwrap();
        let head = Linear::new(table.clone(), None);
        let tied = TokenTable::new(table.clone(), &head).unwrap();
        assert_eq!(
            matches!(tied, TokenTable::Packed(_)),
            Kernel::detect().is_some(),
            "a tied table reads the packed head exactly when a kernel packs it"
        );
        let other = Linear::new(table.copy().unwrap(), None);
        let plain = TokenTable::new(table, &other).unwrap();
        assert!(matches!(plain, TokenTable::Plain(_)));
        let ids = Tensor::new(&[[0u32, 31, 32], [69, 5, 0]], &dev).unwrap();
        let got = tied.forward(&ids).unwrap();
        assert_eq!(got.dims(), &[2, 3, 12]);
        let want = plain.forward(&ids).unwrap();
        assert_eq!(
            got.to_vec3::<f32>().unwrap(),
            want.to_vec3::<f32>().unwrap()
        );
        let outside = Tensor::new(&[70u32], &dev).unwrap();
        assert!(tied.forward(&outside).is_err());
    }

    #[test]
    fn transposes_any_shape() {
        let t = Tensor::arange(0f32, 3.0 * 70.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 70))
            .unwrap();
        let got = transpose_f32(&t).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, t.t().unwrap().to_vec2::<f32>().unwrap());
    }
}
