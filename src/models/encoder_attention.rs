//! The encoder's self-attention on the CPU in f32, one (input, head) at a time, with the very
//! bits of the candle ops it replaces.
//!
//! Why: through candle, an encoder layer's attention is about ten tensor passes over
//! (inputs, heads, positions, positions) scores: the head splits and merge, one matmul per
//! (input, head), each bias added in a pass of its own (T5's relative positions, the padding
//! mask), the softmax (a libm `expf` call per value), the weighted sum. At 3-4 inputs of ~500
//! positions the scores are 50-70 MB, zero-filled and paged in anew by every op, and the
//! zero-fills, copies and bias additions ran on one or two threads: in a T5 summary's profile
//! these passes were about a third of the encoder's time (the linear layers most of the
//! rest). Here a task takes one input's head: its scores (positions x positions, a few hundred
//! KiB, cache-resident) are computed, biased, softmaxed and multiplied by the values in place,
//! reading the queries, keys and values straight from the fused projection's output and
//! writing the merged heads' layout the output projection takes.
//!
//! Exactness: both products run through the `gemm` crate's `gemm`, which candle's matmul
//! calls, with the same shapes (m, n, k) and unit strides where candle's have them, so the
//! crate takes the same path and each value is the same chain of fused multiply-adds (the
//! other strides only say where rows start). The biases are added in their order, the softmax
//! is candle-nn's (`softmax_last_dim`: the row's maximum, `expf` of each difference, the sum in
//! candle's AVX order, each value divided by it), with `expf` as [`super::expf`]
//! computes it (the C library's bits). So an unpadded input's encoder output is candle's bit for
//! bit (a test compares them). One departure: a padded row's softmax sums only up to its last
//! nonzero value, so its positions get the bits of the row alone, where candle's sum, whose order
//! depends on the row's length (runs of 32 in lanes), gave a padded input other last bits than
//! the same input alone whenever the padding crossed a multiple of 32 positions. (The products
//! keep the padded shapes; for opus-mt's heads of 64 they gave the bench's batches the same ids
//! at any batch width, but for small shapes `gemm` may take other paths than alone.)

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

/// An additive attention bias broadcast over (inputs, heads, queries, keys): the value for
/// (b, h, i, j) is `values[b * strides[0] + h * strides[1] + i * strides[2] + j]` (a stride of
/// 0 where the tensor has one row along that axis).
pub struct Bias<'a> {
    pub values: &'a [f32],
    pub strides: [usize; 3],
}

/// The shape of one attention call: `inputs` x `len` positions, `heads` heads of `dim`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub inputs: usize,
    pub len: usize,
    pub heads: usize,
    pub dim: usize,
}

impl Shape {
    fn inner(&self) -> usize {
        self.heads * self.dim
    }

    /// Whether [`attend`] gives candle's bits for this shape: `gemm` takes other paths for
    /// one or two positions or values per head (vector products), which this code does not
    /// mirror; those shapes (and empty ones) stay on candle. Also the CPU must have AVX2 (candle's
    /// sum order).
    pub fn supported(&self) -> bool {
        self.inputs > 0 && self.heads > 0 && self.len >= 3 && self.dim >= 3 && has_avx2()
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `softmax(q kᵀ + biases) v` for every input and head. `qkv`: (inputs, len, 3 x inner), the
/// queries, keys and values of each position side by side (the fused projection's output);
/// each bias must hold every (b, h, i, j) its strides reach. Returns (inputs, len, inner).
///
/// Panics unless [`Shape::supported`] and the sizes agree.
pub fn attend(qkv: &[f32], shape: Shape, biases: &[Bias]) -> Vec<f32> {
    assert!(
        shape.supported(),
        "encoder attention: unsupported {shape:?}"
    );
    let Shape {
        inputs, len, heads, ..
    } = shape;
    let inner = shape.inner();
    assert_eq!(
        qkv.len(),
        inputs * len * 3 * inner,
        "encoder attention: qkv size"
    );
    for bias in biases {
        let [sb, sh, si] = bias.strides;
        let last = (inputs - 1) * sb + (heads - 1) * sh + (len - 1) * si + len;
        assert!(bias.values.len() >= last, "encoder attention: bias size");
    }
    let mut out = Vec::<f32>::with_capacity(inputs * len * inner);
    let shared = Shared(out.as_mut_ptr());
    (0..inputs * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        SCORES.with_borrow_mut(|scores| {
            scores.resize(len * len, 0.0);
            let shared = &shared;
            // SAFETY: the sizes are asserted above; this task alone writes the `dim` columns
            // of head h in the `len` rows of input b.
            unsafe { attend_head(qkv, shape, biases, (b, h), scores, shared.0) };
        });
    });
    // SAFETY: the tasks wrote every (input, position, head, value): each (b, h) its `len` x
    // `dim` block, through `gemm`, which writes every value of its destination.
    unsafe { out.set_len(inputs * len * inner) };
    out
}

thread_local! {
    /// One head's (len, len) scores, reused by the task that runs on this thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output pointer, shared by tasks that write disjoint values.
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint values (see `attend`), and the buffer outlives them.
unsafe impl Sync for Shared {}

/// Input `b`, head `h`: scores into `scores`, then the weighted values into `out`.
///
/// # Safety
///
/// `qkv` and `biases` must have the sizes [`attend`] asserts, `scores` `len * len` values, and
/// `out` point to (inputs, len, inner) values whose head-h columns of input b nobody else
/// touches during the call.
unsafe fn attend_head(
    qkv: &[f32],
    shape: Shape,
    biases: &[Bias],
    (b, h): (usize, usize),
    scores: &mut [f32],
    out: *mut f32,
) {
    let Shape { len, dim, .. } = shape;
    let inner = shape.inner();
    let row = 3 * inner as isize;
    let base = b * len * 3 * inner + h * dim;
    let (q, k, v) = (
        qkv[base..].as_ptr(),
        qkv[base + inner..].as_ptr(),
        qkv[base + 2 * inner..].as_ptr(),
    );
    // candle: q (len, dim) times kᵀ (dim, len), (len, len) row-major, alpha 0, beta 1.
    // SAFETY: rows `row` apart hold `dim` values from each pointer for `len` positions
    // (asserted by `attend`); `scores` holds len x len values.
    unsafe {
        product(
            (len, len, dim),
            (scores.as_mut_ptr(), len as isize),
            (q, row),
            (k, row, 1),
        )
    };
    // SAFETY: `attend` runs only where `Shape::supported` found AVX2.
    unsafe { bias_softmax_avx2(scores, biases, (b, h), len) };
    // candle: probs (len, len) times v (len, dim), (len, dim) row-major.
    // SAFETY: as above for v; `out` has the head's `dim` columns in `len` rows `inner` apart
    // for this task alone (the caller's guarantee).
    unsafe {
        product(
            (len, dim, len),
            (out.add(b * len * inner + h * dim), inner as isize),
            (scores.as_ptr(), len as isize),
            (v, 1, row),
        )
    };
}

/// `dst (m, n) = lhs (m, k) · rhs (k, n)` through `gemm::gemm` as candle's CPU matmul calls it
/// (unit column strides for `dst` and `lhs`, destination overwritten, one thread), so the
/// bits are candle's. `dst` and `lhs` are (pointer, row stride); `rhs` is (pointer, column
/// stride, row stride).
///
/// # Safety
///
/// Each pointer must address every value its strides reach for the given (m, n, k), and `dst`
/// must not overlap the others nor be written by anyone else during the call.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_row): (*mut f32, isize),
    (lhs, lhs_row): (*const f32, isize),
    (rhs, rhs_col, rhs_row): (*const f32, isize, isize),
) {
    // SAFETY: the caller's guarantee above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row,
            false,
            lhs,
            1,
            lhs_row,
            rhs,
            rhs_col,
            rhs_row,
            0f32,
            1f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Each row of one head's (len, len) scores: its biases added in order, then [`softmax`],
/// compiled for AVX2 (the same operations, in wider registers).
///
/// # Safety
///
/// The CPU must support AVX2; the biases must reach every (b, h, i, j) ([`attend`] asserts).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2"))]
unsafe fn bias_softmax_avx2(
    scores: &mut [f32],
    biases: &[Bias],
    (b, h): (usize, usize),
    len: usize,
) {
    for (i, scores) in scores.chunks_exact_mut(len).enumerate() {
        for bias in biases {
            let [sb, sh, si] = bias.strides;
            let bias = &bias.values[b * sb + h * sh + i * si..][..len];
            for (s, &x) in scores.iter_mut().zip(bias) {
                *s += x;
            }
        }
        softmax(scores);
    }
}

/// candle-nn 0.11's `softmax_last_dim` on the CPU for one row, in place: the maximum, `expf`
/// of each value less it, their sum (candle's `vec_sum`), each value divided by the sum.
///
/// The maximum is taken in 16 lanes rather than in one chain (a chain of dependent `max`es was
/// two thirds of this code's time): the same value, whatever the order, except that a row
/// holding NaN or zeros of both signs may give another NaN or zero; neither changes an
/// output (a NaN makes every output of its row NaN either way, and `x - 0` and `x + 0` give
/// `expf` the same value up to the sign of a zero, whose `expf` is 1 either way).
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row_max(row);
    for s in row.iter_mut() {
        *s -= max;
    }
    super::expf::exp_in_place(row);
    // The sum over the row up to its last nonzero value: a padded key adds an exact zero, but
    // `candle_sum`'s order depends on the row's length (runs of 32 in lanes, the rest in
    // order), so summing the padding in would give a padded input other bits than the same
    // input alone whenever the padding crosses a multiple of 32 positions.
    let used = row
        .iter()
        .rposition(|&s| s != 0.0)
        .map_or(0, |last| last + 1);
    let sum = candle_sum(&row[..used]);
    for s in row.iter_mut() {
        *s /= sum;
    }
}

/// The largest value of a non-empty row (NaN aside: see [`softmax`]).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let runs = row.chunks_exact(16);
    let mut max = runs.remainder().iter().fold(row[0], |m, &x| m.max(x));
    for run in runs {
        for (m, &x) in lanes.iter_mut().zip(run) {
            *m = m.max(x);
        }
    }
    for m in lanes {
        max = max.max(m);
    }
    max
}

/// candle-core 0.11's `vec_sum` with AVX2 (`cpu::avx`): four accumulators of eight lanes over
/// whole runs of 32 values, folded (0 + 1, 2 + 3, then the two), the vector's two halves added
/// lane by lane, then `hadd` twice; the values past the last run added one by one.
#[inline(always)]
fn candle_sum(row: &[f32]) -> f32 {
    let whole = row.len() / 32 * 32;
    let mut acc = [[0f32; 8]; 4];
    for run in row[..whole].chunks_exact(32) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (a, &x) in lanes.iter_mut().zip(&run[8 * j..8 * j + 8]) {
                *a += x;
            }
        }
    }
    let add = |x: [f32; 8], y: [f32; 8]| -> [f32; 8] { std::array::from_fn(|l| x[l] + y[l]) };
    let x = add(add(acc[0], acc[1]), add(acc[2], acc[3]));
    let t: [f32; 4] = std::array::from_fn(|l| x[l] + x[l + 4]);
    let mut sum = (t[0] + t[1]) + (t[2] + t[3]);
    for &x in &row[whole..] {
        sum += x;
    }
    sum
}

/// [`attend`] on tensors: `qkv` (inputs, len, 3 x inner) and biases each of 4 dims that
/// broadcast to (inputs, heads, len, len) with full key rows; returns (inputs, len, inner), or
/// `None` where this path does not apply (other dtypes or devices, other shapes).
pub fn attend_tensors(
    qkv: &Tensor,
    heads: usize,
    biases: &[&Tensor],
) -> candle_core::Result<Option<Tensor>> {
    let (inputs, len, width) = qkv.dims3()?;
    let inner = width / 3;
    if heads == 0 || width != 3 * inner || !inner.is_multiple_of(heads) {
        return Ok(None);
    }
    let shape = Shape {
        inputs,
        len,
        heads,
        dim: inner / heads,
    };
    if !shape.supported() {
        return Ok(None);
    }
    let mut strides = Vec::with_capacity(biases.len());
    for bias in biases {
        let dims = bias.dims();
        let full = [inputs, heads, len, len];
        let fits =
            dims.len() == 4 && dims[3] == len && (0..3).all(|a| dims[a] == full[a] || dims[a] == 1);
        if !fits {
            return Ok(None);
        }
        // Row-major strides of the stored dims, 0 along a broadcast axis.
        let stride = |a: usize| -> usize {
            match dims[a] {
                1 => 0,
                _ => dims[a + 1..].iter().product(),
            }
        };
        strides.push([stride(0), stride(1), stride(2)]);
    }
    let tensors = std::iter::once(qkv)
        .chain(biases.iter().copied())
        .map(Tensor::contiguous)
        .collect::<candle_core::Result<Vec<_>>>()?;
    if !(tensors.iter()).all(|t| t.dtype() == candle_core::DType::F32 && t.device().is_cpu()) {
        return Ok(None);
    }
    let held: Vec<_> = tensors.iter().map(Tensor::storage_and_layout).collect();
    let mut slices = Vec::with_capacity(held.len());
    for (t, (storage, layout)) in tensors.iter().zip(&held) {
        let Storage::Cpu(cpu) = &**storage else {
            return Ok(None);
        };
        let start = layout.start_offset();
        slices.push(&cpu.as_slice::<f32>()?[start..start + t.elem_count()]);
    }
    let views: Vec<Bias> = (slices[1..].iter().zip(strides))
        .map(|(&values, strides)| Bias { values, strides })
        .collect();
    let values = slices[0];
    let out = attend(values, shape, &views);
    Ok(Some(Tensor::from_vec(
        out,
        (inputs, len, inner),
        qkv.device(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// candle's path (`common::attend` with the head splits), for comparison.
    fn candle_attention(qkv: &Tensor, heads: usize, biases: &[&Tensor]) -> Tensor {
        let (b, t, width) = qkv.dims3().unwrap();
        let inner = width / 3;
        let split = |i: usize| {
            qkv.narrow(D::Minus1, i * inner, inner)
                .unwrap()
                .reshape((b, t, heads, inner / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let mut scores = q.matmul(&k.transpose(2, 3).unwrap()).unwrap();
        for bias in biases {
            scores = scores.broadcast_add(bias).unwrap();
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let attended = probs.matmul(&v).unwrap();
        let (b, h, t, d) = attended.dims4().unwrap();
        attended
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * d))
            .unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// candle's path for input `b` alone (`qkv` already cut), with `biases` cut to its first
    /// `kept` positions.
    fn candle_alone(
        qkv: &Tensor,
        heads: usize,
        biases: &[&Tensor],
        b: usize,
        kept: usize,
    ) -> Tensor {
        let cut: Vec<Tensor> = (biases.iter())
            .map(|bias| {
                let bias = match bias.dim(0).unwrap() {
                    1 => (*bias).clone(),
                    _ => bias.narrow(0, b, 1).unwrap(),
                };
                let bias = match bias.dim(2).unwrap() {
                    1 => bias,
                    _ => bias.narrow(2, 0, kept).unwrap(),
                };
                bias.narrow(3, 0, kept).unwrap()
            })
            .collect();
        candle_attention(qkv, heads, &cut.iter().collect::<Vec<_>>())
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The same bits as candle's ops on each input alone, with a T5-like position bias (1,
    /// heads, len, len) and a padding mask (inputs, 1, 1, len) in either order, or a mask
    /// alone; over lengths on both sides of `gemm`'s 512-deep blocks and of its small-matrix
    /// paths, and paddings across multiples of 32 positions (129 padded to 125, 40 to 38).
    #[test]
    fn equals_candles_ops_bit_for_bit() {
        if !has_avx2() {
            return;
        }
        let dev = Device::Cpu;
        for &(inputs, len, heads, dim) in &[
            (2, 3, 2, 4),
            (3, 17, 3, 8),
            (2, 40, 2, 64),
            (3, 129, 2, 64),
            (2, 530, 1, 64),
            (1, 700, 2, 16),
        ] {
            let inner = heads * dim;
            let qkv = Tensor::randn(0f32, 1.0, (inputs, len, 3 * inner), &dev).unwrap();
            let positions = Tensor::randn(0f32, 2.0, (1, heads, len, len), &dev).unwrap();
            let keep: Vec<f32> = (0..inputs * len)
                .map(|i| {
                    if i % len < len - i / len * 2 {
                        0.0
                    } else {
                        f32::MIN
                    }
                })
                .collect();
            let padding = Tensor::from_vec(keep, (inputs, 1, 1, len), &dev).unwrap();
            let cases: [Vec<&Tensor>; 3] = [
                vec![&positions, &padding],
                vec![&padding, &positions],
                vec![&padding],
            ];
            for biases in &cases {
                let got = attend_tensors(&qkv, heads, biases)
                    .unwrap()
                    .expect("host path");
                assert_eq!(got.dims(), &[inputs, len, inner]);
                let want = candle_attention(&qkv, heads, biases);
                // Input 0 is not padded: candle's bits, in the batch and alone.
                let first = |t: &Tensor| t.narrow(0, 0, 1).unwrap();
                assert_eq!(bits(&first(&got)), bits(&first(&want)), "{inputs}x{len}");
                let alone = candle_alone(&first(&qkv), heads, biases, 0, len);
                assert_eq!(bits(&first(&got)), bits(&alone), "{inputs}x{len} alone");
                // Input b keeps len - 2b positions. Its softmax sums only its own positions
                // (see `softmax_ignores_trailing_padding`), so it may differ from candle's padded
                // batch in the last bits; the products go through gemm with the padded shapes,
                // which for small ones takes other paths than alone. Both stay within rounding.
                for b in 1..inputs {
                    let kept = len - 2 * b;
                    let own = |t: &Tensor| t.narrow(0, b, 1).unwrap().narrow(1, 0, kept).unwrap();
                    let alone = candle_alone(&own(&qkv), heads, biases, b, kept);
                    let (got, alone) = (values(&own(&got)), values(&alone));
                    for (x, y) in got.iter().zip(&alone) {
                        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn other_shapes_and_dtypes_stay_on_candle() {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((1, 2, 12), DType::F32, &dev).unwrap();
        assert!(attend_tensors(&qkv, 2, &[]).unwrap().is_none());
        let qkv = Tensor::zeros((1, 5, 12), DType::F16, &dev).unwrap();
        assert!(attend_tensors(&qkv, 2, &[]).unwrap().is_none());
        let qkv = Tensor::zeros((1, 5, 24), DType::F32, &dev).unwrap();
        let odd = Tensor::zeros((1, 2, 5, 4), DType::F32, &dev).unwrap();
        assert!(attend_tensors(&qkv, 2, &[&odd]).unwrap().is_none());
    }

    /// A row padded with masked positions gives its own positions the bits of the row alone,
    /// also where the padding crosses a multiple of 32 (candle's sum order changes there).
    #[test]
    fn softmax_ignores_trailing_padding() {
        for (kept, padded) in [(5, 9), (30, 33), (31, 64), (60, 65), (125, 129), (500, 530)] {
            let row: Vec<f32> = (0..kept)
                .map(|i| ((i * 37 % 101) as f32 * 0.13).sin() * 4.0)
                .collect();
            let mut alone = row.clone();
            softmax(&mut alone);
            let mut padded_row = row.clone();
            padded_row.resize(padded, f32::MIN);
            softmax(&mut padded_row);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&padded_row[..kept]),
                bits(&alone),
                "{kept} of {padded}"
            );
            assert!(padded_row[kept..].iter().all(|&p| p == 0.0));
        }
    }

    /// candle's AVX sum order, against candle's own softmax on rows of many lengths.
    #[test]
    fn softmax_is_candles() {
        if !has_avx2() {
            return;
        }
        let dev = Device::Cpu;
        for n in [1usize, 7, 31, 32, 33, 64, 95, 500] {
            let x = Tensor::randn(0f32, 3.0, (4, n), &dev).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
            let mut got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            got.chunks_mut(n).for_each(softmax);
            let got = Tensor::from_vec(got, (4, n), &dev).unwrap();
            assert_eq!(bits(&got), bits(&want), "{n}");
        }
    }
}
