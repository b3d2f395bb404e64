//! The engine's own CPU product `x Wᵀ` for Q4_K and Q6_K weights, with the activations
//! quantized to Q8_K as llama.cpp does, on the engine's threads (as [`super::q8`]).
//!
//! Why: in Gemma 3 270M Q4_K_M the attention output and feed-forward down projections are
//! Q4_K and Q6_K (23 MB). Through candle's `QMatMul` each of them quantized its input and ran
//! on candle's barrier thread pool, whose workers spin between the engine's own parallel
//! loops (18% of the samples of a generated token with 2 threads); here they run as one
//! parallel loop over weight rows ([`crate::parallel::for_each`]: rayon's pool, or a generated
//! token's team of two threads), as the Q8_0 kernel does.
//!
//! Layout: each 256-value super-block is repacked at load with its sub-block scales and mins
//! already multiplied by the block's f16 `d` / `dmin` (f32): 192 bytes per Q4_K block (144 in
//! the file, 1.33x), 276 per Q6_K block (210, 1.31x); the quantized values keep the file's
//! order, which the SIMD code reads 32 bytes at a time. Rows stay row-major: one token streams
//! each matrix once; a prompt's rows go 4 at a time against each weight row, its values
//! unpacked once for them.
//!
//! Arithmetic: each input row is quantized per 256 values as llama.cpp's
//! `quantize_row_q8_K_ref` does (`max` the value of largest magnitude, the first one on ties;
//! `iscale = -127 / max`; `q = min(127, round(iscale · x))`; `d = 1 / iscale`; per 16 values
//! the sum of `q`), except that halves round away from zero as candle's quantizer does (ggml
//! rounds them to even: with that, the real-file test parted from llama.cpp on one more of its
//! 12 prompts, 11/12 against 12/12; either is a right implementation). The integer sums are
//! exact; the float steps are those of the kernels candle 0.11 ran for these matrices on
//! x86-64 before, so the engine's logits are unchanged bit for bit:
//! - Q4_K (candle's repacked x86 kernel): per sub-block of 32 in order,
//!   `acc = fma(Σ q_w·q_x, (d·sc)·d_x, acc)`, then `acc = fma(−dmin·m, d_x·Σ q_x, acc)`.
//! - Q6_K, two or more input rows (the same kernel): per 16 values in order,
//!   `acc = fma(Σ q_w·q_x − 32·Σ q_x, (d·sc)·d_x, acc)` with the unsigned values `q_w`.
//! - Q6_K, one input row (a generated token; ggml's AVX2 `ggml_vec_dot_q6_K_q8_K`, which
//!   candle ran there): `sc·(q_w − 32)·q_x` summed in the 8 32-bit lanes of the AVX2 code,
//!   `acc[t] = fma(d_x·d, lane[t], acc[t])` per block, the lanes summed at the end as ggml's
//!   `hsum_float_8` does.
//!
//! Every kernel (AVX2, portable) computes the same integers and rounds the floats in that one
//! order, so they agree bit for bit (unit tests against a scalar reference on the GGUF bytes,
//! and against candle itself).
//!
//! Safety: the AVX2 kernel exists only on x86-64, and only [`KKernel::available`] creates a
//! [`KKernel`] naming it, after asking the CPU.

use half::f16;
use rayon::prelude::*;

/// Values per super-block.
const QK: usize = 256;
/// Bytes of a Q4_K super-block in the file: d, dmin (f16), 12 bytes of scales, 128 of values.
const Q4K_BYTES: usize = 144;
/// Bytes of a Q6_K super-block in the file: 128 low-nibble bytes, 64 of high bits, 16 scales,
/// d (f16).
const Q6K_BYTES: usize = 210;
/// Adding and subtracting 1.5 · 2²³ rounds an f32 of magnitude below 2²² to the nearest
/// integer, ties to even.
const ROUNDER: f32 = 12_582_912.0;
/// Weight rows per task unit for a prompt: their blocks stay in cache while every input row
/// passes.
const ROWS_PER_CHUNK: usize = 16;
/// Input rows multiplied together against one weight row (the values unpacked once for them).
const TALL: usize = 4;

/// A k-quant kernel this CPU runs: a token that only run-time detection creates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KKernel {
    isa: Isa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// `vpmaddubsw` + `vpmaddwd` on 256-bit registers, with FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Scalar arithmetic: the same values on any CPU.
    Portable,
}

impl KKernel {
    /// The best kernel this CPU runs.
    pub fn detect() -> KKernel {
        Self::available()[0]
    }

    /// Every kernel this CPU runs, best first, the portable one last (tests compare them).
    pub fn available() -> Vec<KKernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            kernels.push(KKernel { isa: Isa::Avx2 });
        }
        kernels.push(KKernel { isa: Isa::Portable });
        kernels
    }

    /// "Avx2" or "Portable".
    pub fn name(self) -> &'static str {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "Avx2",
            Isa::Portable => "Portable",
        }
    }
}

impl std::fmt::Debug for KKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One input super-block quantized to Q8_K.
#[derive(Clone, Copy)]
#[repr(C)]
struct XBlock {
    q: [i8; QK],
    /// Sum of `q` per 16 values.
    sums: [i32; QK / 16],
    d: f32,
}

/// A Q4_K super-block as repacked at load: the values in the file's order, each sub-block's
/// scale and min already multiplied by the block's f16 `d` and `dmin` (as f32).
#[derive(Clone, Copy)]
#[repr(C)]
struct Q4KBlock {
    /// Values: per 64, 32 bytes whose low nibbles are the first 32, high nibbles the next 32.
    qs: [u8; 128],
    /// `d · scale` of each sub-block of 32.
    scales: [f32; 8],
    /// `dmin · min` of each sub-block of 32.
    mins: [f32; 8],
}

/// A Q6_K super-block as repacked at load: the file's values, `d · scale` per 16 as f32.
#[derive(Clone, Copy)]
#[repr(C)]
struct Q6KBlock {
    ql: [u8; 128],
    qh: [u8; 64],
    /// `d · scale` per 16 values.
    scales: [f32; 16],
    /// The file's scales, for the one-row order ([`q6k_lanes`]).
    raw_scales: [i8; 16],
    d: f32,
}

enum Blocks {
    Q4K(Vec<Q4KBlock>),
    Q6K(Vec<Q6KBlock>),
}

/// A (rows, cols) Q4_K or Q6_K weight matrix, row-major super-blocks; see the module doc.
pub struct KMatrix {
    blocks: Blocks,
    rows: usize,
    cols: usize,
    kernel: KKernel,
}

impl std::fmt::Debug for KMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.blocks {
            Blocks::Q4K(_) => "Q4_K",
            Blocks::Q6K(_) => "Q6_K",
        };
        f.debug_struct("KMatrix")
            .field("type", &kind)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("kernel", &self.kernel)
            .finish()
    }
}

/// The 6-bit scale and min of sub-block `j` from the 12 packed bytes (ggml's
/// `get_scale_min_k4`).
fn scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

fn half(bytes: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32()
}

/// Checks that `data` is `rows` rows of `cols` values in super-blocks of `block_bytes`.
fn check(
    data: &[u8],
    rows: usize,
    cols: usize,
    block_bytes: usize,
    name: &str,
) -> Result<(), String> {
    if !cols.is_multiple_of(QK) {
        return Err(format!(
            "{name} rows of {cols} values are not whole super-blocks of {QK}"
        ));
    }
    if data.len() != rows * cols / QK * block_bytes {
        return Err(format!(
            "{name} data of {} bytes is not {rows} rows of {cols} values",
            data.len()
        ));
    }
    Ok(())
}

impl KMatrix {
    /// Repacks GGUF Q4_K data (`rows` rows of `cols / 256` blocks of 144 bytes).
    pub fn from_q4_k(
        data: &[u8],
        rows: usize,
        cols: usize,
        kernel: KKernel,
    ) -> Result<Self, String> {
        check(data, rows, cols, Q4K_BYTES, "Q4_K")?;
        let blocks = data
            .chunks_exact(Q4K_BYTES)
            .map(|b| {
                let (d, dmin) = (half(&b[0..2]), half(&b[2..4]));
                let mut scales = [0f32; 8];
                let mut mins = [0f32; 8];
                for j in 0..8 {
                    let (scale, min) = scale_min(j, &b[4..16]);
                    scales[j] = d * f32::from(scale);
                    mins[j] = dmin * f32::from(min);
                }
                Q4KBlock {
                    qs: b[16..].try_into().expect("128 bytes"),
                    scales,
                    mins,
                }
            })
            .collect();
        Ok(Self {
            blocks: Blocks::Q4K(blocks),
            rows,
            cols,
            kernel,
        })
    }

    /// Repacks GGUF Q6_K data (`rows` rows of `cols / 256` blocks of 210 bytes).
    pub fn from_q6_k(
        data: &[u8],
        rows: usize,
        cols: usize,
        kernel: KKernel,
    ) -> Result<Self, String> {
        check(data, rows, cols, Q6K_BYTES, "Q6_K")?;
        let blocks = data
            .chunks_exact(Q6K_BYTES)
            .map(|b| {
                let d = half(&b[208..210]);
                Q6KBlock {
                    ql: b[..128].try_into().expect("128 bytes"),
                    qh: b[128..192].try_into().expect("64 bytes"),
                    scales: std::array::from_fn(|i| d * f32::from(b[192 + i] as i8)),
                    raw_scales: std::array::from_fn(|i| b[192 + i] as i8),
                    d,
                }
            })
            .collect();
        Ok(Self {
            blocks: Blocks::Q6K(blocks),
            rows,
            cols,
            kernel,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `x Wᵀ` for `x` row-major (m, cols); returns (m, rows) row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "input size");
        let n = self.rows;
        let mut out = vec![0f32; m * n];
        if m == 0 || n == 0 {
            return out;
        }
        let per_row = self.cols / QK;
        let inputs = quantize(x, m);
        let chunks = n.div_ceil(ROWS_PER_CHUNK);
        // A few tasks per thread even out the work when threads are interrupted.
        let per_task = chunks.div_ceil(rayon::current_num_threads() * 4).max(1);
        let shared = SharedOut(out.as_mut_ptr());
        crate::parallel::for_each(chunks.div_ceil(per_task), |task| {
            let first = task * per_task;
            let rows = first * ROWS_PER_CHUNK..((first + per_task) * ROWS_PER_CHUNK).min(n);
            for start in rows.clone().step_by(ROWS_PER_CHUNK) {
                let end = (start + ROWS_PER_CHUNK).min(rows.end);
                let mut i = 0;
                while i < m {
                    let tall = (m - i).min(TALL);
                    let x = &inputs[i * per_row..(i + tall) * per_row];
                    let mut values = [0f32; TALL];
                    for j in start..end {
                        self.dot(j, x, &mut values[..tall], m == 1);
                        for (r, &value) in values[..tall].iter().enumerate() {
                            // SAFETY: i + r < m and j < n: inside `out`, which outlives the
                            // tasks; this task alone writes the columns of its weight rows.
                            unsafe { shared.write((i + r) * n + j, value) };
                        }
                    }
                    i += tall;
                }
            }
        });
        out
    }

    /// Weight row `j` against `out.len()` (1..=[`TALL`]) input rows, held one after the other
    /// in `x`; `single` when the product has one input row (a generated token).
    fn dot(&self, j: usize, x: &[XBlock], out: &mut [f32], single: bool) {
        let per_row = self.cols / QK;
        assert!((1..=TALL).contains(&out.len()) && x.len() == out.len() * per_row);
        if let (Blocks::Q6K(w), true) = (&self.blocks, single) {
            let w = &w[j * per_row..][..per_row];
            out[0] = match self.kernel.isa {
                // SAFETY: `Isa::Avx2` exists only after `avx2` and `fma` were detected; one
                // input row of `per_row` blocks (checked above, `single` means m = 1).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { x86::q6k_single(w, x) },
                Isa::Portable => {
                    let mut acc = [0f32; 8];
                    for (w, x) in w.iter().zip(x) {
                        let d = x.d * w.d;
                        for (acc, lane) in acc.iter_mut().zip(q6k_lanes(w, x)) {
                            *acc = d.mul_add(lane as f32, *acc);
                        }
                    }
                    sum8(acc)
                }
            };
            return;
        }
        match (&self.blocks, self.kernel.isa) {
            // SAFETY: `Isa::Avx2` exists only after `avx2` and `fma` were detected; the sizes
            // were checked above.
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4K(w), Isa::Avx2) => unsafe {
                x86::q4k(&w[j * per_row..][..per_row], x, out)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q6K(w), Isa::Avx2) => unsafe {
                x86::q6k(&w[j * per_row..][..per_row], x, out)
            },
            (Blocks::Q4K(w), Isa::Portable) => {
                let w = &w[j * per_row..][..per_row];
                for (out, x) in out.iter_mut().zip(x.chunks_exact(per_row)) {
                    *out = w
                        .iter()
                        .zip(x)
                        .fold(0.0, |acc, (w, x)| q4k_step(acc, w, x, q4k_sums(w, x)));
                }
            }
            (Blocks::Q6K(w), Isa::Portable) => {
                let w = &w[j * per_row..][..per_row];
                for (out, x) in out.iter_mut().zip(x.chunks_exact(per_row)) {
                    *out = w
                        .iter()
                        .zip(x)
                        .fold(0.0, |acc, (w, x)| q6k_step(acc, w, x, q6k_sums(w, x)));
                }
            }
        }
    }
}

/// The output buffer shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each task writes only its own columns; the buffer outlives the tasks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    ///
    /// `index` must lie inside the buffer, and no other task may touch it meanwhile.
    unsafe fn write(self, index: usize, value: f32) {
        // SAFETY: the caller's guarantee.
        unsafe { *self.0.add(index) = value };
    }
}

/// Quantizes 256 values to Q8_K as llama.cpp's `quantize_row_q8_K_ref` does, except that
/// halves round away from zero (candle's `BlockQ8K::from_float`; ggml's `nearest_int` rounds
/// them to even): see the module doc for why.
fn quantize_block(x: &[f32]) -> XBlock {
    let mut block = XBlock {
        q: [0; QK],
        sums: [0; QK / 16],
        d: 0.0,
    };
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return block;
    }
    let iscale = -127.0 / max;
    for (q, &v) in block.q.iter_mut().zip(x) {
        *q = round_half_away(iscale * v).min(127) as i8;
    }
    for (sum, q) in block.sums.iter_mut().zip(block.q.chunks_exact(16)) {
        *sum = q.iter().map(|&q| i32::from(q)).sum();
    }
    block.d = 1.0 / iscale;
    block
}

/// `v` (|v| ≤ 128) rounded to the nearest integer, halves away from zero (`f32::round`, which
/// is a libm call on x86-64 without SSE4.1): the ties-to-even rounding of plain SSE2
/// arithmetic, corrected on exact halves.
fn round_half_away(v: f32) -> i32 {
    let even = (v + ROUNDER) - ROUNDER;
    let rounded = if (v - even).abs() == 0.5 {
        v + 0.5f32.copysign(v)
    } else {
        even
    };
    rounded as i32
}

/// The Q8_K blocks of `m` rows of values, row after row.
fn quantize(x: &[f32], m: usize) -> Vec<XBlock> {
    if m >= 32 {
        x.par_chunks_exact(QK).map(quantize_block).collect()
    } else {
        x.chunks_exact(QK).map(quantize_block).collect()
    }
}

/// One Q4_K super-block's float steps, the same in every kernel: per sub-block of 32 in
/// order, `acc = fma(sum, scale · d_x, acc)`, then `acc = fma(−min, d_x · Σ q_x, acc)`.
/// `sums` are the sub-blocks' exact `Σ q_w · q_x`.
#[inline(always)]
fn q4k_step(mut acc: f32, w: &Q4KBlock, x: &XBlock, sums: [i32; 8]) -> f32 {
    for (s, sum) in sums.into_iter().enumerate() {
        acc = (sum as f32).mul_add(w.scales[s] * x.d, acc);
        let inputs = (x.sums[2 * s] + x.sums[2 * s + 1]) as f32;
        acc = (-w.mins[s]).mul_add(x.d * inputs, acc);
    }
    acc
}

/// One Q6_K super-block's float steps, the same in every kernel: per 16 values in order,
/// `acc = fma(sum − 32 · Σ q_x, scale · d_x, acc)`; `sums` are the exact `Σ q_w · q_x` of the
/// unsigned values (0..64).
#[inline(always)]
fn q6k_step(mut acc: f32, w: &Q6KBlock, x: &XBlock, sums: [i32; 16]) -> f32 {
    for (s, sum) in sums.into_iter().enumerate() {
        let value = sum as f32 - 32.0 * x.sums[s] as f32;
        acc = value.mul_add(w.scales[s] * x.d, acc);
    }
    acc
}

/// The exact `Σ q_w · q_x` of each sub-block of 32 of one Q4_K block, in scalar code.
fn q4k_sums(w: &Q4KBlock, x: &XBlock) -> [i32; 8] {
    let mut sums = [0i32; 8];
    for chunk in 0..4 {
        for (i, &b) in w.qs[32 * chunk..][..32].iter().enumerate() {
            sums[2 * chunk] += i32::from(b & 0x0F) * i32::from(x.q[64 * chunk + i]);
            sums[2 * chunk + 1] += i32::from(b >> 4) * i32::from(x.q[64 * chunk + 32 + i]);
        }
    }
    sums
}

/// The 6-bit values (0..64) of one Q6_K block in order.
fn q6k_values(w: &Q6KBlock) -> [u8; QK] {
    let mut q = [0u8; QK];
    for half in 0..2 {
        let (ql, qh) = (&w.ql[64 * half..], &w.qh[32 * half..]);
        let y = &mut q[128 * half..];
        for l in 0..32 {
            y[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// The integer sums of one Q6_K block per 32-bit lane of ggml's AVX2 `vec_dot_q6_K_q8_K`:
/// lane `t` holds, for every 32 values, `sc · (q − 32) · x` of values `4t..4t + 4`.
fn q6k_lanes(w: &Q6KBlock, x: &XBlock) -> [i32; 8] {
    let q = q6k_values(w);
    let mut lanes = [0i32; 8];
    for p in 0..QK {
        lanes[(p % 32) / 4] +=
            i32::from(w.raw_scales[p / 16]) * (i32::from(q[p]) - 32) * i32::from(x.q[p]);
    }
    lanes
}

/// ggml's `hsum_float_8`: the two halves added lane by lane, then lanes 0+2 and 1+3, then
/// those two.
fn sum8(v: [f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| v[4 + i] + v[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The exact `Σ q_w · q_x` of each 16 values of one Q6_K block (unsigned values), in scalar
/// code.
fn q6k_sums(w: &Q6KBlock, x: &XBlock) -> [i32; 16] {
    let q = q6k_values(w);
    let mut sums = [0i32; 16];
    for (p, (&q, &x)) in q.iter().zip(&x.q).enumerate() {
        sums[p / 16] += i32::from(q) * i32::from(x);
    }
    sums
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{q4k_step, q6k_step, sum8, Q4KBlock, Q6KBlock, XBlock};
    use std::arch::x86_64::*;

    /// Calls `$kernel::<R>` for the run-time row count `$rows` (1..=4).
    macro_rules! by_rows {
        ($kernel:ident, $w:expr, $x:expr, $out:expr) => {
            match $out.len() {
                1 => $kernel::<1>($w, $x, $out),
                2 => $kernel::<2>($w, $x, $out),
                3 => $kernel::<3>($w, $x, $out),
                4 => $kernel::<4>($w, $x, $out),
                rows => unreachable!("tile of {rows} rows"),
            }
        };
    }

    /// # Safety
    ///
    /// The CPU must support `avx2` and `fma`; `x` must hold `out.len()` (1..=4) rows of
    /// `w.len()` blocks.
    pub(super) unsafe fn q4k(w: &[Q4KBlock], x: &[XBlock], out: &mut [f32]) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(q4k_rows, w, x, out) }
    }

    /// # Safety
    ///
    /// As [`q4k`].
    pub(super) unsafe fn q6k(w: &[Q6KBlock], x: &[XBlock], out: &mut [f32]) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(q6k_rows, w, x, out) }
    }

    /// One input row against one Q6_K row in the order of ggml's AVX2 `vec_dot_q6_K_q8_K`
    /// (what candle runs for one row): per block, `sc · (q − 32) · x` in 8 integer lanes
    /// (pairs less 32 times the inputs' pairs fit 16 bits), `acc = fma(d_x · d_w, lane, acc)`
    /// per lane, the lanes summed at the end ([`sum8`]).
    ///
    /// # Safety
    ///
    /// The CPU must support `avx2` and `fma`; `x` must hold `w.len()` blocks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q6k_single(w: &[Q6KBlock], x: &[XBlock]) -> f32 {
        let m32 = _mm256_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for (w, x) in w.iter().zip(x) {
            let mut sum = _mm256_setzero_si256();
            for half in 0..2 {
                let values = q6k_half(w, half);
                for (k, values) in values.into_iter().enumerate() {
                    let g = 8 * half + 2 * k;
                    let scales = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(w.raw_scales[g + 1])),
                        _mm_set1_epi16(i16::from(w.raw_scales[g])),
                    );
                    // SAFETY: 32 of the block's 256 input bytes.
                    let xv =
                        unsafe { _mm256_loadu_si256(x.q.as_ptr().add(128 * half + 32 * k).cast()) };
                    let pairs = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(values, xv),
                        _mm256_maddubs_epi16(m32, xv),
                    );
                    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, scales));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(x.d * w.d), _mm256_cvtepi32_ps(sum), acc);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: 32 writable bytes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        sum8(lanes)
    }

    /// The 6-bit values of one half (`half` 0 or 1) of a Q6_K block, 4 vectors of 32: the low
    /// 4 bits from `ql`, bits 4-5 from a pair of bits of `qh` (16-bit shifts; the mask keeps
    /// each byte's own bits).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn q6k_half(w: &Q6KBlock, half: usize) -> [__m256i; 4] {
        let low4 = _mm256_set1_epi8(0x0F);
        let bits45 = _mm256_set1_epi8(0x30);
        let (ql, qh) = (&w.ql[64 * half..][..64], &w.qh[32 * half..][..32]);
        // SAFETY: the slices hold 64 and 32 bytes (checked above).
        let (ql0, ql1, qh) = unsafe {
            (
                _mm256_loadu_si256(ql.as_ptr().cast()),
                _mm256_loadu_si256(ql.as_ptr().add(32).cast()),
                _mm256_loadu_si256(qh.as_ptr().cast()),
            )
        };
        [
            _mm256_or_si256(
                _mm256_and_si256(ql0, low4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql1, low4),
                _mm256_and_si256(_mm256_slli_epi16::<2>(qh), bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4),
                _mm256_and_si256(qh, bits45),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), bits45),
            ),
        ]
    }

    /// The lane sums of four vectors in one: `[Σa, Σb, Σc, Σd]` in each 128-bit half (the
    /// sums of that half's lanes).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sums4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
        _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d))
    }

    /// The 8 lanes of an integer vector.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn lanes(v: __m256i) -> [i32; 8] {
        let mut out = [0i32; 8];
        // SAFETY: 32 writable bytes.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        out
    }

    /// R input rows against one Q4_K row: per block and 64 values, the nibbles unpacked once,
    /// times each row's signed bytes in pairs (`vpmaddubsw`, at most 2 · 15 · 127, exact),
    /// pairs summed in 32-bit lanes (`vpmaddwd` by ones), each sub-block's lanes summed
    /// (`vphaddd`); the float steps are [`q4k_step`].
    ///
    /// # Safety
    ///
    /// The CPU must support `avx2` and `fma`; `x` must hold R rows of `w.len()` blocks and
    /// `out` R values.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4k_rows<const R: usize>(w: &[Q4KBlock], x: &[XBlock], out: &mut [f32]) {
        let blocks = w.len();
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [0f32; R];
        for (b, w) in w.iter().enumerate() {
            let mut subs = [[_mm256_setzero_si256(); 8]; R];
            for chunk in 0..4 {
                // SAFETY: 32 bytes at 32·chunk of the block's 128.
                let bytes = unsafe { _mm256_loadu_si256(w.qs.as_ptr().add(32 * chunk).cast()) };
                let low = _mm256_and_si256(bytes, mask);
                let high = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), mask);
                for (r, subs) in subs.iter_mut().enumerate() {
                    let q = x[r * blocks + b].q.as_ptr();
                    // SAFETY: 64 of the block's 256 input bytes.
                    let (xl, xh) = unsafe {
                        (
                            _mm256_loadu_si256(q.add(64 * chunk).cast()),
                            _mm256_loadu_si256(q.add(64 * chunk + 32).cast()),
                        )
                    };
                    subs[2 * chunk] = _mm256_madd_epi16(_mm256_maddubs_epi16(low, xl), ones);
                    subs[2 * chunk + 1] = _mm256_madd_epi16(_mm256_maddubs_epi16(high, xh), ones);
                }
            }
            for (r, (acc, v)) in acc.iter_mut().zip(&subs).enumerate() {
                let first = sums4(v[0], v[1], v[2], v[3]);
                let second = sums4(v[4], v[5], v[6], v[7]);
                let sums = _mm256_add_epi32(
                    _mm256_permute2x128_si256::<0x20>(first, second),
                    _mm256_permute2x128_si256::<0x31>(first, second),
                );
                *acc = q4k_step(*acc, w, &x[r * blocks + b], lanes(sums));
            }
        }
        out.copy_from_slice(&acc);
    }

    /// R input rows against one Q6_K row: per block and 32 values, the 6-bit values unpacked
    /// once, times each row's signed bytes in pairs (`vpmaddubsw`, at most 2 · 63 · 127,
    /// exact), pairs summed in 32-bit lanes, each 16 values' lanes summed; the float steps are
    /// [`q6k_step`].
    ///
    /// # Safety
    ///
    /// As [`q4k_rows`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q6k_rows<const R: usize>(w: &[Q6KBlock], x: &[XBlock], out: &mut [f32]) {
        let blocks = w.len();
        let ones = _mm256_set1_epi16(1);
        let mut acc = [0f32; R];
        for (b, w) in w.iter().enumerate() {
            let mut sums = [[0i32; 16]; R];
            for half in 0..2 {
                let values = q6k_half(w, half);
                for (r, sums) in sums.iter_mut().enumerate() {
                    let q = x[r * blocks + b].q.as_ptr();
                    let v: [__m256i; 4] = std::array::from_fn(|k| {
                        // SAFETY: 32 of the block's 256 input bytes.
                        let xv = unsafe { _mm256_loadu_si256(q.add(128 * half + 32 * k).cast()) };
                        _mm256_madd_epi16(_mm256_maddubs_epi16(values[k], xv), ones)
                    });
                    // Low halves: the first 16 values of each 32, high halves the second.
                    let all = lanes(sums4(v[0], v[1], v[2], v[3]));
                    for k in 0..4 {
                        sums[8 * half + 2 * k] = all[k];
                        sums[8 * half + 2 * k + 1] = all[4 + k];
                    }
                }
            }
            for (r, (acc, &sums)) in acc.iter_mut().zip(&sums).enumerate() {
                *acc = q6k_step(*acc, w, &x[r * blocks + b], sums);
            }
        }
        out.copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{test_bits as bits, test_values as values};
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn quantized(w: &[f32], rows: usize, cols: usize, dtype: GgmlDType) -> QTensor {
        let t = Tensor::from_slice(w, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    }

    /// The same arithmetic in the plainest form, on the GGUF bytes and ggml's dequantization
    /// formulas (`dequantize_row_q4_K` / `_q6_K` as integer parts): per sub-block the exact
    /// integer sum, then the module's float steps; for Q6_K with one input row, ggml's lanes.
    fn reference(
        x: &[f32],
        data: &[u8],
        m: usize,
        n: usize,
        k: usize,
        dtype: GgmlDType,
    ) -> Vec<f32> {
        let per_row = k / QK;
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            let xs: Vec<XBlock> = x[i * k..(i + 1) * k]
                .chunks_exact(QK)
                .map(quantize_block)
                .collect();
            for j in 0..n {
                let mut acc = 0f32;
                let mut single = [0f32; 8];
                for (b, xb) in xs.iter().enumerate() {
                    match dtype {
                        GgmlDType::Q4K => {
                            let block = &data[(j * per_row + b) * Q4K_BYTES..][..Q4K_BYTES];
                            let (d, dmin) = (half(&block[0..2]), half(&block[2..4]));
                            for s in 0..8 {
                                let mut sum = 0i32;
                                let mut inputs = 0i32;
                                for t in 32 * s..32 * (s + 1) {
                                    let (chunk, l) = (t / 64, t % 64);
                                    let byte = block[16 + 32 * chunk + l % 32];
                                    let q = if l < 32 { byte & 0x0F } else { byte >> 4 };
                                    sum += i32::from(q) * i32::from(xb.q[t]);
                                    inputs += i32::from(xb.q[t]);
                                }
                                let (sc, mn) = scale_min(s, &block[4..16]);
                                let scale = d * f32::from(sc) * xb.d;
                                acc = (sum as f32).mul_add(scale, acc);
                                let min = dmin * f32::from(mn);
                                acc = (-min).mul_add(xb.d * inputs as f32, acc);
                            }
                        }
                        GgmlDType::Q6K if m == 1 => {
                            let block = &data[(j * per_row + b) * Q6K_BYTES..][..Q6K_BYTES];
                            let d = half(&block[208..210]);
                            let mut lanes = [0i32; 8];
                            for t in 0..QK {
                                let (h, r) = (t / 128, t % 128);
                                let (quarter, l) = (r / 32, r % 32);
                                let low = block[64 * h + l + 32 * (quarter % 2)];
                                let low = if quarter < 2 { low & 0x0F } else { low >> 4 };
                                let high = (block[128 + 32 * h + l] >> (2 * quarter)) & 3;
                                let q = i32::from(low | (high << 4)) - 32;
                                let sc = i32::from(block[192 + t / 16] as i8);
                                lanes[l / 4] += sc * q * i32::from(xb.q[t]);
                            }
                            for (acc, lane) in single.iter_mut().zip(lanes) {
                                *acc = (xb.d * d).mul_add(lane as f32, *acc);
                            }
                        }
                        GgmlDType::Q6K => {
                            let block = &data[(j * per_row + b) * Q6K_BYTES..][..Q6K_BYTES];
                            let d = half(&block[208..210]);
                            for g in 0..16 {
                                let (mut sum, mut inputs) = (0i32, 0i32);
                                for t in 16 * g..16 * (g + 1) {
                                    let (h, r) = (t / 128, t % 128);
                                    let (quarter, l) = (r / 32, r % 32);
                                    let low = block[64 * h + l + 32 * (quarter % 2)];
                                    let low = if quarter < 2 { low & 0x0F } else { low >> 4 };
                                    let high = (block[128 + 32 * h + l] >> (2 * quarter)) & 3;
                                    sum += i32::from(low | (high << 4)) * i32::from(xb.q[t]);
                                    inputs += i32::from(xb.q[t]);
                                }
                                let scale = d * f32::from(block[192 + g] as i8) * xb.d;
                                let value = sum as f32 - 32.0 * inputs as f32;
                                acc = value.mul_add(scale, acc);
                            }
                        }
                        _ => unreachable!(),
                    }
                }
                out[i * n + j] = if m == 1 && dtype == GgmlDType::Q6K {
                    let r: Vec<f32> = (0..4).map(|t| single[4 + t] + single[t]).collect();
                    (r[0] + r[2]) + (r[1] + r[3])
                } else {
                    acc
                };
            }
        }
        out
    }

    fn packed(data: &[u8], n: usize, k: usize, dtype: GgmlDType, kernel: KKernel) -> KMatrix {
        match dtype {
            GgmlDType::Q4K => KMatrix::from_q4_k(data, n, k, kernel).unwrap(),
            GgmlDType::Q6K => KMatrix::from_q6_k(data, n, k, kernel).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn detection_offers_what_the_cpu_has() {
        let names: Vec<&str> = KKernel::available().iter().map(|k| k.name()).collect();
        assert_eq!(names.last(), Some(&"Portable"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            names.contains(&"Avx2"),
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
        assert_eq!(names.first(), Some(&KKernel::detect().name()));
    }

    #[test]
    fn quantize_block_follows_llama_cpp_with_halves_away_from_zero() {
        let mut x = [0f32; QK];
        x[0] = 0.5;
        x[1] = -1.0;
        x[2] = 1.0; // same magnitude as x[1]: the first one sets the sign
        x[3] = 1.0 / 254.0;
        x[4] = 3.0 / 254.0;
        let b = quantize_block(&x);
        // iscale = -127 / -1 = 127; d = 1 / 127.
        assert_eq!(b.d, 1.0 / 127.0);
        // 63.5, 0.5 and 1.5 round away from zero.
        assert_eq!(b.q[..5], [64, -127, 127, 1, 2]);
        assert_eq!(b.sums[0], 64 - 127 + 127 + 1 + 2);
        assert!(b.sums[1..].iter().all(|&s| s == 0));
        // The largest value negative after the scaling: its sign flips, the clamp keeps 127.
        let mut y = [0f32; QK];
        y[5] = 2.0;
        y[6] = -2.0;
        let b = quantize_block(&y);
        assert_eq!(b.d, -2.0 / 127.0);
        assert_eq!(b.q[5..7], [-127, 127]);
        let zero = quantize_block(&[0.0; QK]);
        assert_eq!((zero.d, zero.q, zero.sums), (0.0, [0; QK], [0; 16]));
    }

    #[test]
    fn rounding_equals_f32_round() {
        let mut cases: Vec<f32> = (-2560..=2560).map(|i| i as f32 * 0.05).collect();
        cases.extend((-256..=256).map(|i| i as f32 * 0.5));
        cases.extend([0.49999997, -0.49999997, 126.49999, 127.0, -127.0, 1e-30]);
        for v in cases {
            assert_eq!(round_half_away(v), v.round() as i32, "{v}");
        }
    }

    #[test]
    fn every_kernel_matches_the_reference_bit_for_bit() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            for (m, n, k) in [
                (1, 16, 256),
                (1, 37, 1024),
                (3, 20, 512),
                (40, 33, 256),
                (17, 5, 2048),
            ] {
                let x = values(m * k, 1);
                let data = quantized(&values(n * k, 2), n, k, dtype)
                    .data()
                    .unwrap()
                    .into_owned();
                let want = reference(&x, &data, m, n, k, dtype);
                for kernel in KKernel::available() {
                    let got = packed(&data, n, k, dtype, kernel).matmul_t(&x, m);
                    assert_eq!(bits(&got), bits(&want), "{dtype:?} {kernel:?} {m}x{n}x{k}");
                }
            }
        }
    }

    #[test]
    fn extreme_values_stay_exact() {
        // All values and scales at their extremes: 6-bit scales and mins of 63, Q6_K values of
        // 0 and 63 and scales of ±127 and -128, inputs of ±127.
        let (m, n, k) = (3, 8, 512);
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let mut data = quantized(&values(n * k, 3), n, k, dtype)
                .data()
                .unwrap()
                .into_owned();
            let size = if dtype == GgmlDType::Q4K {
                Q4K_BYTES
            } else {
                Q6K_BYTES
            };
            for (b, block) in data.chunks_exact_mut(size).enumerate() {
                if dtype == GgmlDType::Q4K {
                    block[4..16].fill(0xFF);
                    block[16..].fill(if b % 2 == 0 { 0xFF } else { 0xF0 });
                } else {
                    block[..192].fill(if b % 2 == 0 { 0xFF } else { 0x00 });
                    for (i, s) in block[192..208].iter_mut().enumerate() {
                        *s = [0x7F, 0x80, 0x81][i % 3];
                    }
                }
            }
            let want = reference(&x, &data, m, n, k, dtype);
            for kernel in KKernel::available() {
                let got = packed(&data, n, k, dtype, kernel).matmul_t(&x, m);
                assert_eq!(bits(&got), bits(&want), "{dtype:?} {kernel:?}");
            }
        }
    }

    /// A row's outputs do not depend on the other rows of a batch (Q6_K: of a batch of two or
    /// more; one row alone takes ggml's order).
    #[test]
    fn a_row_gets_the_same_outputs_alone_and_in_a_batch() {
        let (m, n, k) = (40, 24, 512);
        let x = values(m * k, 4);
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let data = quantized(&values(n * k, 5), n, k, dtype)
                .data()
                .unwrap()
                .into_owned();
            let matrix = packed(&data, n, k, dtype, KKernel::detect());
            let batch = matrix.matmul_t(&x, m);
            for i in [0, 1, 16, 38] {
                let alone = match dtype {
                    GgmlDType::Q6K => matrix.matmul_t(&x[i * k..(i + 2) * k], 2)[..n].to_vec(),
                    _ => matrix.matmul_t(&x[i * k..(i + 1) * k], 1),
                };
                assert_eq!(
                    bits(&alone),
                    bits(&batch[i * n..(i + 1) * n]),
                    "{dtype:?} row {i}"
                );
            }
        }
    }

    /// candle's QMatMul on the same tensor (the same Q8_K activations up to its rounding of
    /// ties): close to ours everywhere, the same bits where it runs its x86 repacked kernels
    /// (and, for one Q6_K row, ggml's AVX2 dot product).
    #[test]
    fn products_agree_with_candle() {
        let (n, k) = (48, 1024);
        for (m, dtype) in [
            (5, GgmlDType::Q4K),
            (5, GgmlDType::Q6K),
            (1, GgmlDType::Q4K),
            (1, GgmlDType::Q6K),
        ] {
            let x = values(m * k, 6);
            let q = quantized(&values(n * k, 7), n, k, dtype);
            let data = q.data().unwrap().into_owned();
            let got = packed(&data, n, k, dtype, KKernel::detect()).matmul_t(&x, m);
            let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap();
            let want: Vec<f32> = QMatMul::from_qtensor(q)
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // On AVX-512 VNNI CPUs candle runs its x86 repacked kernels here, whose float
            // steps ours follow: the same bits (the inputs hold no rounding ties).
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                assert_eq!(bits(&got), bits(&want), "{dtype:?} {m} rows");
            }
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= scale * 1e-4,
                    "{dtype:?} {i}: {g} vs {w} (largest {scale})"
                );
            }
        }
    }

    /// The repacked blocks cost at most a third more than the file's (see the module doc).
    #[test]
    fn repacked_blocks_stay_small() {
        assert_eq!(std::mem::size_of::<Q4KBlock>(), 192);
        assert_eq!(std::mem::size_of::<Q6KBlock>(), 276);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let kernel = KKernel::detect();
        assert!(KMatrix::from_q4_k(&[0; 144], 1, 128, kernel).is_err());
        assert!(KMatrix::from_q4_k(&[0; 144], 2, 256, kernel).is_err());
        assert!(KMatrix::from_q6_k(&[0; 210], 1, 256, kernel).is_ok());
        assert!(KMatrix::from_q6_k(&[0; 209], 1, 256, kernel).is_err());
    }
}
