//! The linear layer `y = x Wᵀ + b`, with a faster operand order for decoder steps on the CPU.
//!
//! A decoder step multiplies a few rows (one per hypothesis) by large weight matrices. For such
//! skinny products the gemm crate behind candle's CPU matmul is much faster when it computes
//! `W xᵀ` (weight rows as the long side of the output) than `x Wᵀ`: measured on this project's
//! 2-core machine, the 62,518-word output layer of opus-mt takes 5.3 ms instead of 19 ms for 8
//! rows and 32 ms instead of 41 ms for 64 rows, transposition included; from 128 rows on the
//! plain order wins. Each output is the same dot product either way. So with at most
//! [`SKINNY_ROWS`] rows, f32 on the CPU, the product is taken as `(W xᵀ)ᵀ`; otherwise candle-nn's
//! `Linear` runs as is.

use candle_core::{DType, Module, Result, Tensor};
use rayon::prelude::*;

/// Most rows for which the transposed product is used (measured crossover: between 64 and 128).
pub const SKINNY_ROWS: usize = 64;

#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    /// (out_features, in_features).
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The product through OpenBLAS, when `x` is f32 on the CPU.
    #[cfg(feature = "openblas")]
    fn blas(
        &self,
        x: &Tensor,
        rows: usize,
        inputs: usize,
        leading: &[usize],
    ) -> Result<Option<Tensor>> {
        let x2 = x.reshape((rows, inputs))?;
        let Some(y) = super::blas::linear(&x2, self.weight(), self.inner.bias())? else {
            return Ok(None);
        };
        let mut out_dims = leading.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims).map(Some)
    }

    fn skinny(&self, x: &Tensor, rows: usize) -> bool {
        rows <= SKINNY_ROWS && x.device().is_cpu() && x.dtype() == DType::F32
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&inputs, leading)) = dims.split_last() else {
            return self.inner.forward(x);
        };
        let rows: usize = leading.iter().product();
        #[cfg(feature = "openblas")]
        if let Some(y) = self.blas(x, rows, inputs, leading)? {
            return Ok(y);
        }
        if !self.skinny(x, rows) {
            return self.inner.forward(x);
        }
        let x = x.reshape((rows, inputs))?;
        let transposed = self.inner.weight().matmul(&x.t()?)?;
        let y = transpose_f32(&transposed)?;
        let y = match self.inner.bias() {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = leading.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims)
    }
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
    fn skinny_and_plain_products_agree() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 19), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 37, &dev).unwrap();
        let linear = Linear::new(w.clone(), Some(b.clone()));
        let plain = candle_nn::Linear::new(w, Some(b));
        for rows in [1, 5, SKINNY_ROWS, SKINNY_ROWS + 1] {
            let x = Tensor::randn(0f32, 1.0, (rows, 1, 19), &dev).unwrap();
            let got = linear.forward(&x).unwrap();
            let want = plain.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "{rows} rows");
        }
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
