//! The engine's own CPU product `x Wᵀ` for Q8_0 weights (and Q5_0 ones widened to Q8_0), with
//! the activations quantized to Q8_0 blocks exactly as llama.cpp's x86 code does.
//!
//! Why: candle 0.11's CPU `QMatMul` quantizes each input row, then computes one (row, column)
//! dot product at a time, converting both f16 block scales in software every time; a prompt of
//! 329 tokens streams every weight matrix 329 times, and for one generated token the
//! conversions and the per-dot overhead cost as much as reading the weights. Q8_0 (with widened
//! Q5_0) is ~90% of the bytes of Gemma 3 270M Q4_K_M, its tied 262,144-row output layer alone
//! 171 MB read at every token.
//!
//! Layout: the rows of W (output features) are cut into panels of [`PANEL`] = 16; a panel is
//! stored block by block (32 inputs), each block as 8 groups of 4 inputs, a group holding the four
//! bytes of each of the 16 rows one after the other (64 bytes, one cache line): what `vpdpbusd`
//! multiplies into one 32-bit lane per row. The bytes are `w + 128` (unsigned), the form
//! `vpdpbusd` takes as its unsigned operand; the 16 f16 scales of a panel's block sit in a
//! separate array, converted by the CPU (`vcvtph2ps`) 16 at a time. A panel is one contiguous
//! stream, so one token streams the matrix once at memory speed, and a prompt's rows are
//! multiplied in tiles of up to 12 against each panel block while it is in cache.
//!
//! Matrices whose values all lie in -16..16 (Q5_0 widened at load) are kept in five bits for
//! the AVX-512 VNNI kernel: per panel block 4 lines of nibbles (two groups each) and 8 masks of
//! 64 bits (each group's fifth bits), 320 bytes instead of 512, since a generated token's time
//! is the bytes it reads; the kernel rebuilds each group's bytes as `w + 16` with one masked
//! add and starts the block's sum at `-16 · Σ x`, so the sums are the same integers.
//!
//! Arithmetic (llama.cpp's `ggml_vec_dot_q8_0_q8_0`): each input block of 32 is quantized with
//! `d = amax / 127` stored as f16 and `q = round(x · 127 / amax)` (ties to even, as its AVX code
//! rounds); per (input row, weight row, block) the integer dot product is exact; then
//! `acc = fma(sum as f32, d_w · d_x, acc)` block after block. Every kernel computes the same
//! integers and rounds the floats in that one order, so they agree bit for bit, and a row's
//! outputs do not depend on the other rows of the batch. The VNNI kernels get the exact sum as
//! `Σ (w + 128) · x − 128 · Σ x`, the second term computed once per input block; the AVX2 kernel
//! moves the weight's sign onto the input (`|w| · sign(x, w)`, pairs at most 2 · 128 · 127 <
//! 2¹⁵, never saturated).
//!
//! Safety: the SIMD kernels exist only on x86-64, and only [`Q8Kernel::detect`] and
//! [`Q8Kernel::available`] create a [`Q8Kernel`] naming one, after asking the CPU, so the safe
//! [`Q8Matrix::matmul_t`] never runs an instruction the CPU lacks. The portable kernel computes
//! the same values in scalar code on every target.

use half::f16;
use rayon::prelude::*;

/// Weight rows per panel: the 16 32-bit lanes of an AVX-512 register.
const PANEL: usize = 16;
/// Values per Q8_0 block.
const BLOCK: usize = 32;
/// Inputs per 32-bit lane of `vpdpbusd`.
const GROUP: usize = 4;
/// Bytes of a group: [`GROUP`] bytes of each of the [`PANEL`] rows.
const GROUP_BYTES: usize = PANEL * GROUP;
/// Bytes of one block of a panel.
const PANEL_BLOCK_BYTES: usize = PANEL * BLOCK;
/// Bytes of one block of a panel in the five-bit form: 4 lines of nibbles (groups `2v` and
/// `2v + 1` in the low and high nibbles of line `v`), then 8 masks of 64 bits (the fifth bit
/// of each group's 64 bytes).
const FIVE_BLOCK_BYTES: usize = 4 * 64 + 8 * 8;
/// Bytes of a Q8_0 block in the GGUF file: an f16 scale and 32 signed bytes.
const Q8_0_BYTES: usize = 2 + BLOCK;
/// Adding and subtracting 1.5 · 2²³ rounds an f32 of magnitude below 2²² to the nearest integer,
/// ties to even.
const ROUNDER: f32 = 12_582_912.0;
/// Input rows quantized per task when the input is large enough to split.
const QUANTIZE_ROWS_PER_TASK: usize = 16;

/// A Q8_0 kernel this CPU runs: a token that only run-time detection creates (its field is
/// private), so holding one proves the CPU has the instructions it uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Q8Kernel {
    isa: Isa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// `vpdpbusd` on 512-bit registers.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit registers (VEX encoded), with F16C and FMA.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// `vpmaddubsw` + `vpmaddwd` on 256-bit registers, with F16C and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Scalar arithmetic: the same values, on any CPU, slowly.
    Portable,
}

impl Isa {
    /// Whether this kernel takes panels in the five-bit form (only the AVX-512 VNNI one; the
    /// others get every matrix in bytes).
    fn five_bit(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self == Isa::Avx512Vnni;
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }
}

impl Q8Kernel {
    /// The best kernel this CPU runs (the portable one where no SIMD kernel does).
    pub fn detect() -> Q8Kernel {
        Self::available()[0]
    }

    /// Every kernel this CPU runs, best first; the portable one always comes last. Tests
    /// compare them.
    pub fn available() -> Vec<Q8Kernel> {
        #[cfg(target_arch = "x86_64")]
        let simd = {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            [
                (
                    has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                    Isa::Avx512Vnni,
                ),
                (avx2 && has!("avxvnni"), Isa::AvxVnni),
                (avx2, Isa::Avx2),
            ]
        };
        #[cfg(not(target_arch = "x86_64"))]
        let simd: [(bool, Isa); 0] = [];
        let detected = simd.into_iter().filter(|&(has, _)| has).map(|(_, isa)| isa);
        detected
            .chain([Isa::Portable])
            .map(|isa| Q8Kernel { isa })
            .collect()
    }

    /// "Avx512Vnni", "AvxVnni", "Avx2" or "Portable".
    pub fn name(self) -> &'static str {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => "Avx512Vnni",
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => "AvxVnni",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "Avx2",
            Isa::Portable => "Portable",
        }
    }

    /// The most input rows one kernel call handles (its register tile's height).
    fn tall(self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => 12,
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni | Isa::Avx2 => 3,
            Isa::Portable => 12,
        }
    }

    /// Runs the kernel on one tile of `rows` input rows against one panel.
    ///
    /// # Safety
    ///
    /// `t` must point to valid memory as [`Tile`] describes it for `rows` rows
    /// (`1..=tall()`), and `rows` output rows of [`PANEL`] values that nothing else reads or
    /// writes meanwhile. The instruction set is guaranteed by `self`, which only detection
    /// creates.
    unsafe fn run(self, t: Tile, rows: usize) {
        match self.isa {
            // SAFETY: the caller guarantees the memory; `Isa::Avx512Vnni` exists only after
            // `avx512f` and `avx512vnni` were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni if t.five_bit => unsafe { x86::vnni512_five_tile(t, rows) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::vnni512_tile(t, rows) },
            // SAFETY: as above, after `avx2`, `fma`, `f16c` and `avxvnni` were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => unsafe { x86::vnni256_tile(t, rows) },
            // SAFETY: as above, after `avx2`, `fma` and `f16c` were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_tile(t, rows) },
            // SAFETY: the caller guarantees the memory; plain scalar code.
            Isa::Portable => unsafe { portable_tile(t, rows) },
        }
    }
}

impl std::fmt::Debug for Q8Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One 64-byte cache line: the unit of the packed storage, for its alignment.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A (rows, cols) Q8_0 weight matrix in panel order; see the module doc.
pub struct Q8Matrix {
    lines: Vec<Line>,
    /// f16 bits of the block scales: panel by panel, block by block, [`PANEL`] rows each
    /// (zero for the padding rows of the last panel).
    scales: Vec<u16>,
    rows: usize,
    cols: usize,
    /// Blocks per row: `cols / 32`.
    blocks: usize,
    kernel: Q8Kernel,
    /// The panels hold `w + 16` in five bits ([`FIVE_BLOCK_BYTES`] per panel block) instead
    /// of `w + 128` in a byte ([`PANEL_BLOCK_BYTES`]): see [`Q8Matrix::from_q8_0`].
    five_bit: bool,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q8Matrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("kernel", &self.kernel)
            .finish()
    }
}

/// Quantizes the 32 values `x` as llama.cpp's AVX code does: returns the f16-rounded scale as
/// f32 (0 for a block of zeros) and the sum of the quantized values (the VNNI kernels'
/// correction).
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = f16::from_f32(amax / 127.0).to_f32();
    let inverse = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // Rounds to nearest, ties to even, in plain SSE2 arithmetic (`round_ties_even` is a
        // libm call without SSE4.1: 3% of a generated token).
        *q = ((v * inverse + ROUNDER) - ROUNDER) as i8;
        sum += i32::from(*q);
    }
    (d, sum)
}

/// One input row's place in [`Inputs`]: its index, bytes, block scales and corrections.
type RowSlices<'a> = (usize, ((&'a mut [i8], &'a mut [f32]), &'a mut [i32]));

/// Input rows quantized for one product: `rows` x `cols` signed bytes, and per (row, block) the
/// scale and `-128 · Σ q` (the VNNI kernels' starting value).
struct Inputs {
    bytes: Vec<i8>,
    scales: Vec<f32>,
    corrections: Vec<i32>,
}

impl Inputs {
    fn quantize(x: &[f32], rows: usize, cols: usize) -> Self {
        let blocks = cols / BLOCK;
        let mut bytes = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows * blocks];
        let mut corrections = vec![0i32; rows * blocks];
        let one = |(row, ((q, s), c)): RowSlices| {
            let x = &x[row * cols..(row + 1) * cols];
            for (b, (q, (s, c))) in q
                .chunks_exact_mut(BLOCK)
                .zip(s.iter_mut().zip(c.iter_mut()))
                .enumerate()
            {
                let (d, sum) = quantize_block(&x[b * BLOCK..(b + 1) * BLOCK], q);
                *s = d;
                *c = -128 * sum;
            }
        };
        if rows >= 2 * QUANTIZE_ROWS_PER_TASK {
            bytes
                .par_chunks_mut(cols)
                .zip(scales.par_chunks_mut(blocks))
                .zip(corrections.par_chunks_mut(blocks))
                .enumerate()
                .with_min_len(QUANTIZE_ROWS_PER_TASK)
                .for_each(one);
        } else {
            bytes
                .chunks_mut(cols)
                .zip(scales.chunks_mut(blocks))
                .zip(corrections.chunks_mut(blocks))
                .enumerate()
                .for_each(one);
        }
        Self {
            bytes,
            scales,
            corrections,
        }
    }
}

impl Q8Matrix {
    /// Packs GGUF Q8_0 data (`rows` rows of `cols / 32` blocks of 34 bytes, row-major) for
    /// `kernel`, panels in parallel on rayon's threads.
    pub fn from_q8_0(
        data: &[u8],
        rows: usize,
        cols: usize,
        kernel: Q8Kernel,
    ) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(format!(
                "Q8_0 rows of {cols} values are not whole blocks of 32"
            ));
        }
        let blocks = cols / BLOCK;
        let row_bytes = blocks * Q8_0_BYTES;
        if data.len() != rows * row_bytes {
            return Err(format!(
                "Q8_0 data of {} bytes is not {rows} rows of {cols} values",
                data.len()
            ));
        }
        if kernel.isa.five_bit() && fits_five_bits(data, row_bytes) {
            return Ok(Self::five_bit(data, rows, cols, kernel));
        }
        let panels = rows.div_ceil(PANEL);
        let panel_bytes = blocks * PANEL_BLOCK_BYTES;
        // Padding rows hold w = 0 (stored as 128) and scale 0.
        let mut lines = vec![Line([128; 64]); panels * panel_bytes / 64];
        let mut scales = vec![0u16; panels * blocks * PANEL];
        if blocks > 0 {
            as_bytes_mut(&mut lines)
                .par_chunks_mut(panel_bytes)
                .zip(scales.par_chunks_mut(blocks * PANEL))
                .enumerate()
                .for_each(|(p, (panel, scales))| {
                    for lane in 0..PANEL.min(rows - p * PANEL) {
                        let row = &data[(p * PANEL + lane) * row_bytes..][..row_bytes];
                        for (b, block) in row.chunks_exact(Q8_0_BYTES).enumerate() {
                            scales[b * PANEL + lane] = u16::from_le_bytes([block[0], block[1]]);
                            let dst = &mut panel[b * PANEL_BLOCK_BYTES..][..PANEL_BLOCK_BYTES];
                            for (g, four) in block[2..].chunks_exact(GROUP).enumerate() {
                                let at = g * GROUP_BYTES + lane * GROUP;
                                for (d, &v) in dst[at..at + GROUP].iter_mut().zip(four) {
                                    *d = v ^ 0x80;
                                }
                            }
                        }
                    }
                });
        }
        Ok(Self {
            lines,
            scales,
            rows,
            cols,
            blocks,
            kernel,
            five_bit: false,
        })
    }

    /// Packs checked Q8_0 data whose values all lie in -16..16 (Q5_0 widened at load) in the
    /// five-bit form.
    ///
    /// Why: Gemma 3 270M Q4_K_M stores its q, k, gate and up projections as Q5_0 (22 bytes per
    /// 32 values); widened to bytes they are 34, and a generated token reads every weight
    /// once, so those bytes are its time. In five bits a panel block is 320 bytes instead of
    /// 512; the kernel restores each group's bytes (`w + 16`) with one mask-add of 16 and
    /// starts the block's sum at `-16 · Σ x` instead of `-128 · Σ x`: the integer sums, and so
    /// the values, are the same bit for bit.
    fn five_bit(data: &[u8], rows: usize, cols: usize, kernel: Q8Kernel) -> Self {
        let blocks = cols / BLOCK;
        let row_bytes = blocks * Q8_0_BYTES;
        let panels = rows.div_ceil(PANEL);
        let panel_bytes = blocks * FIVE_BLOCK_BYTES;
        let mut lines = vec![Line([0; 64]); panels * panel_bytes / 64];
        let mut scales = vec![0u16; panels * blocks * PANEL];
        as_bytes_mut(&mut lines)
            .par_chunks_mut(panel_bytes)
            .zip(scales.par_chunks_mut(blocks * PANEL))
            .enumerate()
            .for_each(|(p, (panel, scales))| {
                for lane in 0..PANEL {
                    let row = p * PANEL + lane;
                    for b in 0..blocks {
                        // Padding rows: w = 0 and scale 0.
                        let block = (row < rows)
                            .then(|| &data[row * row_bytes + b * Q8_0_BYTES..][..Q8_0_BYTES]);
                        if let Some(block) = block {
                            scales[b * PANEL + lane] = u16::from_le_bytes([block[0], block[1]]);
                        }
                        let dst = &mut panel[b * FIVE_BLOCK_BYTES..][..FIVE_BLOCK_BYTES];
                        for i in 0..BLOCK {
                            let w = block.map_or(0, |block| block[2 + i] as i8);
                            pack_five(dst, lane, i, (w + 16) as u8);
                        }
                    }
                }
            });
        Self {
            lines,
            scales,
            rows,
            cols,
            blocks,
            kernel,
            five_bit: true,
        }
    }

    /// Bytes of one panel block as stored.
    fn block_bytes(&self) -> usize {
        match self.five_bit {
            true => FIVE_BLOCK_BYTES,
            false => PANEL_BLOCK_BYTES,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `row` as f32: `q · d` per value, as candle's and ggml's Q8_0 dequantization
    /// compute it (the embedding table, kept only in this form).
    pub fn dequantize_row(&self, row: usize) -> Vec<f32> {
        assert!(row < self.rows, "row {row} of {}", self.rows);
        let (p, lane) = (row / PANEL, row % PANEL);
        let panel = &as_bytes(&self.lines)[p * self.blocks * self.block_bytes()..];
        let mut out = Vec::with_capacity(self.cols);
        for b in 0..self.blocks {
            let d = f16::from_bits(self.scales[(p * self.blocks + b) * PANEL + lane]).to_f32();
            for i in 0..BLOCK {
                let q = match self.five_bit {
                    true => unpack_five(&panel[b * FIVE_BLOCK_BYTES..], lane, i) as i8 - 16,
                    false => {
                        let at = b * PANEL_BLOCK_BYTES + (i / GROUP) * GROUP_BYTES + lane * GROUP;
                        (panel[at + i % GROUP] ^ 0x80) as i8
                    }
                };
                out.push(f32::from(q) * d);
            }
        }
        out
    }

    /// `x Wᵀ` for `x` row-major (m, cols); returns (m, rows) row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "input size");
        let n = self.rows;
        if m == 0 || n == 0 {
            return vec![0f32; m * n];
        }
        let inputs = Inputs::quantize(x, m, self.cols);
        let panels = n.div_ceil(PANEL);
        // Written in whole panels: the last one's padding columns land in a wider buffer,
        // dropped below.
        let width = panels * PANEL;
        let mut out = vec![0f32; m * width];
        // A few tasks per thread even out the work when threads are interrupted.
        let per_task = panels.div_ceil(rayon::current_num_threads() * 4).max(1);
        let shared = SharedOut(out.as_mut_ptr());
        crate::parallel::for_each(panels.div_ceil(per_task), |task| {
            let first = task * per_task;
            let last = (first + per_task).min(panels);
            // SAFETY: this task alone writes the columns of panels first..last of `out`
            // (m x width values, alive until the tasks end); the inputs hold m rows of
            // cols bytes and m x blocks scales and corrections.
            unsafe { self.panels(&inputs, m, first..last, width, shared) }
        });
        if width != n {
            out = out
                .chunks_exact(width)
                .flat_map(|row| &row[..n])
                .copied()
                .collect();
        }
        out
    }

    /// Output columns of `panels` for every input row.
    ///
    /// # Safety
    ///
    /// `inputs` must hold `m` quantized rows of this matrix's width, `panels` must lie within
    /// the matrix's panels, and `out` must point to `m * width` writable values whose columns
    /// of these panels no one else touches during the call.
    unsafe fn panels(
        &self,
        inputs: &Inputs,
        m: usize,
        panels: std::ops::Range<usize>,
        width: usize,
        out: SharedOut,
    ) {
        let tall = self.kernel.tall();
        let panel_bytes = self.blocks * self.block_bytes();
        let values = as_bytes(&self.lines);
        for p in panels {
            let mut row = 0;
            while row < m {
                let now = (m - row).min(tall);
                // SAFETY: row < m and p < panels: every offset stays inside the inputs, the
                // packed values and scales, and the output (the caller's sizes).
                let tile = unsafe {
                    Tile {
                        x: inputs.bytes.as_ptr().add(row * self.cols),
                        x_scales: inputs.scales.as_ptr().add(row * self.blocks),
                        corrections: inputs.corrections.as_ptr().add(row * self.blocks),
                        cols: self.cols,
                        w: values.as_ptr().add(p * panel_bytes),
                        w_scales: self.scales.as_ptr().add(p * self.blocks * PANEL),
                        blocks: self.blocks,
                        out: out.0.add(row * width + p * PANEL),
                        ldc: width,
                        five_bit: self.five_bit,
                    }
                };
                // SAFETY: the tile lies in bounds, `now` is 1..=tall, and its output columns
                // are this call's own (the caller's guarantee).
                unsafe { self.kernel.run(tile, now) };
                row += now;
            }
        }
    }
}

/// Pointers of one kernel call: `rows` input rows against one panel ([`PANEL`] outputs each).
#[derive(Clone, Copy)]
struct Tile {
    /// First quantized input row; rows `cols` bytes apart.
    x: *const i8,
    /// Scales and corrections of the first row's blocks; rows `blocks` apart.
    x_scales: *const f32,
    corrections: *const i32,
    cols: usize,
    /// The panel: `blocks` blocks of [`PANEL_BLOCK_BYTES`], 64-byte aligned.
    w: *const u8,
    /// The panel's f16 scales, [`PANEL`] per block.
    w_scales: *const u16,
    blocks: usize,
    /// First output, rows `ldc` values apart.
    out: *mut f32,
    ldc: usize,
    /// The panel is in the five-bit form (only for a kernel whose `Isa::five_bit` holds).
    five_bit: bool,
}

/// Whether every value of the Q8_0 rows in `data` lies in -16..16 (a widened Q5_0 matrix).
fn fits_five_bits(data: &[u8], row_bytes: usize) -> bool {
    row_bytes > 0
        && data
            .chunks_exact(Q8_0_BYTES)
            .all(|block| block[2..].iter().all(|&q| (-16..16).contains(&(q as i8))))
}

/// Stores `u` (0..32), value `i` of row `lane` of one five-bit panel block.
fn pack_five(dst: &mut [u8], lane: usize, i: usize, u: u8) {
    let (g, at) = (i / GROUP, lane * GROUP + i % GROUP);
    let nibble = &mut dst[(g / 2) * 64 + at];
    *nibble |= (u & 0x0F) << (4 * (g % 2));
    if u & 0x10 != 0 {
        dst[4 * 64 + g * 8 + at / 8] |= 1 << (at % 8);
    }
}

/// Value `i` of row `lane` of one five-bit panel block (0..32).
fn unpack_five(src: &[u8], lane: usize, i: usize) -> u8 {
    let (g, at) = (i / GROUP, lane * GROUP + i % GROUP);
    let low = (src[(g / 2) * 64 + at] >> (4 * (g % 2))) & 0x0F;
    let high = (src[4 * 64 + g * 8 + at / 8] >> (at % 8)) & 1;
    low | (high << 4)
}

/// The portable kernel: per output, block by block, the exact integer dot product of the signed
/// values, accumulated as every kernel does.
///
/// # Safety
///
/// As [`Q8Kernel::run`]: `t` must describe valid memory for `rows` rows.
unsafe fn portable_tile(t: Tile, rows: usize) {
    for r in 0..rows {
        for lane in 0..PANEL {
            let mut acc = 0f32;
            for b in 0..t.blocks {
                let mut sum = 0i32;
                for i in 0..BLOCK {
                    // SAFETY: r < rows, b < blocks, i < 32, lane < 16: inside the input row and
                    // the panel.
                    let (x, w) = unsafe {
                        (
                            *t.x.add(r * t.cols + b * BLOCK + i),
                            *t.w.add(
                                b * PANEL_BLOCK_BYTES
                                    + (i / GROUP) * GROUP_BYTES
                                    + lane * GROUP
                                    + i % GROUP,
                            ),
                        )
                    };
                    sum += i32::from(x) * i32::from((w ^ 0x80) as i8);
                }
                // SAFETY: inside the row's block scales and the panel's scales.
                let (dx, dw) = unsafe {
                    (
                        *t.x_scales.add(r * t.blocks + b),
                        f16::from_bits(*t.w_scales.add(b * PANEL + lane)).to_f32(),
                    )
                };
                acc = (sum as f32).mul_add(dw * dx, acc);
            }
            // SAFETY: inside the output row's panel columns.
            unsafe { *t.out.add(r * t.ldc + lane) = acc };
        }
    }
}

/// The output buffer shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each task writes only its own columns; the buffer outlives the tasks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

fn as_bytes(lines: &[Line]) -> &[u8] {
    // SAFETY: Line is 64 u8 with no padding (repr C, size 64).
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), lines.len() * 64) }
}

fn as_bytes_mut(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, BLOCK, FIVE_BLOCK_BYTES, GROUP, GROUP_BYTES, PANEL, PANEL_BLOCK_BYTES};
    use std::arch::x86_64::*;

    /// Calls `$kernel::<R>` for the run-time row count `$rows` (1..=max).
    macro_rules! by_rows {
        ($kernel:ident, $tile:expr, $rows:expr, [$($r:literal)*]) => {
            match $rows {
                $($r => $kernel::<$r>($tile),)*
                _ => unreachable!("tile of {} rows", $rows),
            }
        };
    }

    /// The four input bytes of group `g` of block `b` of row `r`, as one 32-bit value.
    ///
    /// # Safety
    ///
    /// Row `r` of the tile must hold block `b`.
    #[inline(always)]
    unsafe fn four(t: &Tile, r: usize, b: usize, g: usize) -> i32 {
        // SAFETY: the caller's guarantee; the read may be unaligned.
        unsafe {
            t.x.add(r * t.cols + b * BLOCK + g * GROUP)
                .cast::<i32>()
                .read_unaligned()
        }
    }

    /// # Safety
    ///
    /// The CPU must support `avx512f` and `avx512vnni`, `rows` must be 1..=12, and `t` must
    /// describe valid memory for `rows` rows (see `Q8Kernel::run`).
    pub(super) unsafe fn vnni512_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(vnni512, t, rows, [1 2 3 4 5 6 7 8 9 10 11 12]) }
    }

    /// # Safety
    ///
    /// The CPU must support `avx512f`, `avx512bw` and `avx512vnni`, `rows` must be 1..=12, and
    /// `t` must describe valid memory for `rows` rows of a five-bit panel (see
    /// `Q8Kernel::run`).
    pub(super) unsafe fn vnni512_five_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(vnni512_five, t, rows, [1 2 3 4 5 6 7 8 9 10 11 12]) }
    }

    /// # Safety
    ///
    /// The CPU must support `avx2`, `fma`, `f16c` and `avxvnni`, `rows` must be 1..=3, and `t`
    /// must describe valid memory for `rows` rows (see `Q8Kernel::run`).
    pub(super) unsafe fn vnni256_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(vnni256, t, rows, [1 2 3]) }
    }

    /// # Safety
    ///
    /// The CPU must support `avx2`, `fma` and `f16c`, `rows` must be 1..=3, and `t` must
    /// describe valid memory for `rows` rows (see `Q8Kernel::run`).
    pub(super) unsafe fn avx2_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(avx2, t, rows, [1 2 3]) }
    }

    /// R input rows x one panel: per row one integer accumulator (the block's sum, started at
    /// the row's correction) and one float accumulator of 16 lanes.
    ///
    /// # Safety
    ///
    /// As `vnni512_tile`, with R rows.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vnni512<const R: usize>(t: Tile) {
        // SAFETY: the caller guarantees the CPU features and that every pointer read or
        // written below (R input rows with their block scales and corrections, the panel and
        // its scales, R output rows of 16) is valid; the panel loads are aligned (64-byte
        // lines).
        unsafe {
            let mut acc = [_mm512_setzero_ps(); R];
            for b in 0..t.blocks {
                let w = t.w.add(b * PANEL_BLOCK_BYTES);
                let mut sums: [__m512i; R] = std::array::from_fn(|r| {
                    _mm512_set1_epi32(*t.corrections.add(r * t.blocks + b))
                });
                for g in 0..BLOCK / GROUP {
                    let wv = _mm512_load_si512(w.add(g * GROUP_BYTES).cast());
                    for (r, sum) in sums.iter_mut().enumerate() {
                        *sum = _mm512_dpbusd_epi32(*sum, wv, _mm512_set1_epi32(four(&t, r, b, g)));
                    }
                }
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(t.w_scales.add(b * PANEL).cast()));
                for (r, (acc, &sum)) in acc.iter_mut().zip(&sums).enumerate() {
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(*t.x_scales.add(r * t.blocks + b)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), d, *acc);
                }
            }
            for (r, &acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(t.out.add(r * t.ldc), acc);
            }
        }
    }

    /// [`vnni512`] on a five-bit panel: each line of nibbles gives two groups' bytes (low and
    /// high nibbles), the group's mask adds the fifth bit (16) to the bytes it marks, and the
    /// block's sum starts at `-16 · Σ x` (the row's correction, `-128 · Σ x`, over 8): the
    /// same integer sums, the same float steps.
    ///
    /// # Safety
    ///
    /// As `vnni512_five_tile`, with R rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni512_five<const R: usize>(t: Tile) {
        // SAFETY: as in `vnni512`; the panel block is FIVE_BLOCK_BYTES (a multiple of 64) and
        // its lines and masks lie inside it, the lines 64-byte aligned, the masks 8-byte.
        unsafe {
            let low4 = _mm512_set1_epi8(0x0F);
            let sixteen = _mm512_set1_epi8(16);
            let mut acc = [_mm512_setzero_ps(); R];
            for b in 0..t.blocks {
                let w = t.w.add(b * FIVE_BLOCK_BYTES);
                let masks = w.add(4 * 64).cast::<u64>();
                let mut sums: [__m512i; R] = std::array::from_fn(|r| {
                    _mm512_set1_epi32(*t.corrections.add(r * t.blocks + b) / 8)
                });
                for v in 0..4 {
                    let nibbles = _mm512_load_si512(w.add(v * 64).cast());
                    let halves = [
                        _mm512_and_si512(nibbles, low4),
                        _mm512_and_si512(_mm512_srli_epi16::<4>(nibbles), low4),
                    ];
                    for (h, half) in halves.into_iter().enumerate() {
                        let g = 2 * v + h;
                        let wv = _mm512_mask_add_epi8(half, *masks.add(g), half, sixteen);
                        for (r, sum) in sums.iter_mut().enumerate() {
                            *sum =
                                _mm512_dpbusd_epi32(*sum, wv, _mm512_set1_epi32(four(&t, r, b, g)));
                        }
                    }
                }
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(t.w_scales.add(b * PANEL).cast()));
                for (r, (acc, &sum)) in acc.iter_mut().zip(&sums).enumerate() {
                    let d = _mm512_mul_ps(dw, _mm512_set1_ps(*t.x_scales.add(r * t.blocks + b)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), d, *acc);
                }
            }
            for (r, &acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(t.out.add(r * t.ldc), acc);
            }
        }
    }

    /// The 256-bit kernels' float step: `acc[r][h] = fma(sum, d_w · d_x, acc)` for the two
    /// halves of the panel.
    ///
    /// # Safety
    ///
    /// The CPU must support `avx2`, `fma` and `f16c`; block `b` must be one of the tile's.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale8<const R: usize>(
        t: &Tile,
        b: usize,
        sums: &[[__m256i; 2]; R],
        acc: &mut [[__m256; 2]; R],
    ) {
        // SAFETY: the caller's guarantees: the panel's 16 scales of block b and each row's
        // scale of block b are in bounds.
        unsafe {
            let scales = _mm256_loadu_si256(t.w_scales.add(b * PANEL).cast());
            let dw = [
                _mm256_cvtph_ps(_mm256_castsi256_si128(scales)),
                _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(scales)),
            ];
            for (r, (acc, sums)) in acc.iter_mut().zip(sums).enumerate() {
                let dx = _mm256_set1_ps(*t.x_scales.add(r * t.blocks + b));
                for h in 0..2 {
                    let d = _mm256_mul_ps(dw[h], dx);
                    acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[h]), d, acc[h]);
                }
            }
        }
    }

    /// Stores the 256-bit kernels' accumulators.
    ///
    /// # Safety
    ///
    /// The CPU must support `avx`; R output rows of 16 values must be writable.
    #[target_feature(enable = "avx")]
    #[inline]
    unsafe fn store8<const R: usize>(t: &Tile, acc: &[[__m256; 2]; R]) {
        // SAFETY: the caller's guarantees.
        unsafe {
            for (r, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(t.out.add(r * t.ldc), acc[0]);
                _mm256_storeu_ps(t.out.add(r * t.ldc + 8), acc[1]);
            }
        }
    }

    /// R input rows x one panel as two halves of 8 lanes, `vpdpbusd` on ymm.
    ///
    /// # Safety
    ///
    /// As `vnni256_tile`, with R rows.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn vnni256<const R: usize>(t: Tile) {
        // SAFETY: as in `vnni512`; the panel loads are aligned (32-byte halves of 64-byte
        // lines).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for b in 0..t.blocks {
                let w = t.w.add(b * PANEL_BLOCK_BYTES);
                let mut sums: [[__m256i; 2]; R] = std::array::from_fn(|r| {
                    [_mm256_set1_epi32(*t.corrections.add(r * t.blocks + b)); 2]
                });
                for g in 0..BLOCK / GROUP {
                    let w0 = _mm256_load_si256(w.add(g * GROUP_BYTES).cast());
                    let w1 = _mm256_load_si256(w.add(g * GROUP_BYTES + 32).cast());
                    for (r, sum) in sums.iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(four(&t, r, b, g));
                        sum[0] = _mm256_dpbusd_avx_epi32(sum[0], w0, x);
                        sum[1] = _mm256_dpbusd_avx_epi32(sum[1], w1, x);
                    }
                }
                scale8(&t, b, &sums, &mut acc);
            }
            store8(&t, &acc);
        }
    }

    /// R input rows x one panel as two halves of 8 lanes: `|w| · sign(x, w)` through
    /// `vpmaddubsw` and `vpmaddwd` by ones.
    ///
    /// # Safety
    ///
    /// As `avx2_tile`, with R rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2<const R: usize>(t: Tile) {
        // SAFETY: as in `vnni256`.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let flip = _mm256_set1_epi8(-128);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for b in 0..t.blocks {
                let w = t.w.add(b * PANEL_BLOCK_BYTES);
                let mut sums = [[_mm256_setzero_si256(); 2]; R];
                for g in 0..BLOCK / GROUP {
                    let signed = [0, 32].map(|half| {
                        _mm256_xor_si256(
                            _mm256_load_si256(w.add(g * GROUP_BYTES + half).cast()),
                            flip,
                        )
                    });
                    let magnitude = signed.map(|w| _mm256_abs_epi8(w));
                    for (r, sum) in sums.iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(four(&t, r, b, g));
                        for h in 0..2 {
                            let pairs =
                                _mm256_maddubs_epi16(magnitude[h], _mm256_sign_epi8(x, signed[h]));
                            sum[h] = _mm256_add_epi32(sum[h], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                scale8(&t, b, &sums, &mut acc);
            }
            store8(&t, &acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{test_bits as bits, test_values as values};
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// GGUF Q8_0 bytes of a (rows, cols) matrix, through candle's quantizer.
    fn q8_0(w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
        let t = Tensor::from_slice(w, (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::Q8_0)
            .unwrap()
            .data()
            .unwrap()
            .into_owned()
    }

    /// The same arithmetic in the plainest form, on the GGUF bytes: per block the exact integer
    /// dot product, then `fma(sum, d_w · d_x, acc)`.
    fn reference(x: &[f32], data: &[u8], m: usize, n: usize, k: usize) -> Vec<f32> {
        let blocks = k / BLOCK;
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for b in 0..blocks {
                    let mut q = [0i8; BLOCK];
                    let (dx, _) = quantize_block(&x[i * k + b * BLOCK..][..BLOCK], &mut q);
                    let block = &data[(j * blocks + b) * Q8_0_BYTES..][..Q8_0_BYTES];
                    let dw = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
                    let sum: i32 = (0..BLOCK)
                        .map(|t| i32::from(q[t]) * i32::from(block[2 + t] as i8))
                        .sum();
                    acc = (sum as f32).mul_add(dw * dx, acc);
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    fn kernels() -> Vec<Q8Kernel> {
        let kernels = Q8Kernel::available();
        assert_eq!(kernels.last().map(|k| k.name()), Some("Portable"));
        kernels
    }

    #[test]
    fn detection_offers_what_the_cpu_has() {
        let names: Vec<&str> = kernels().iter().map(|k| k.name()).collect();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let vnni512 = has!("avx512f") && has!("avx512bw") && has!("avx512vnni");
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            assert_eq!(names.contains(&"Avx512Vnni"), vnni512);
            assert_eq!(names.contains(&"AvxVnni"), avx2 && has!("avxvnni"));
            assert_eq!(names.contains(&"Avx2"), avx2);
        }
        assert_eq!(names.first(), Some(&Q8Kernel::detect().name()));
    }

    #[test]
    fn quantize_block_follows_llama_cpp() {
        let mut x = [0f32; BLOCK];
        x[0] = 0.5;
        x[1] = -1.0;
        x[2] = 0.25;
        x[3] = 1.0 / 254.0;
        x[4] = 3.0 / 254.0;
        let mut q = [0i8; BLOCK];
        let (d, sum) = quantize_block(&x, &mut q);
        assert_eq!(d, f16::from_f32(1.0 / 127.0).to_f32());
        // 63.5, 0.5 and 1.5 round to even.
        assert_eq!(q[..5], [64, -127, 32, 0, 2]);
        assert_eq!(sum, 64 - 127 + 32 + 2);
        assert_eq!(quantize_block(&[0.0; BLOCK], &mut q), (0.0, 0));
        assert_eq!(q, [0; BLOCK]);
    }

    #[test]
    fn every_kernel_matches_the_reference_bit_for_bit() {
        for kernel in kernels() {
            for (m, n, k) in [
                (1, 16, 32),
                (1, 5, 64),
                (13, 33, 96),
                (25, 70, 640),
                (12, 48, 128),
                (1, 100, 2048),
                (40, 17, 32),
            ] {
                let x = values(m * k, 1);
                let data = q8_0(&values(n * k, 2), n, k);
                let packed = Q8Matrix::from_q8_0(&data, n, k, kernel).unwrap();
                let got = packed.matmul_t(&x, m);
                let want = reference(&x, &data, m, n, k);
                assert_eq!(bits(&got), bits(&want), "{kernel:?} {m}x{n}x{k}");
            }
        }
    }

    /// Q5_0 values (widened to Q8_0 at load): the AVX-512 VNNI kernel keeps them in five bits,
    /// the others in bytes; all give the reference's values bit for bit, extremes (-16, 15)
    /// included, and the five-bit rows dequantize to the same values.
    #[test]
    fn five_bit_panels_match_the_reference_bit_for_bit() {
        for (m, n, k) in [
            (1, 16, 32),
            (1, 37, 640),
            (13, 33, 96),
            (12, 48, 128),
            (25, 20, 64),
        ] {
            let x = values(m * k, 3);
            let mut data = q8_0(&values(n * k, 4), n, k);
            for (i, block) in data.chunks_exact_mut(Q8_0_BYTES).enumerate() {
                for (t, q) in block[2..].iter_mut().enumerate() {
                    let v = match (i + t) % 7 {
                        0 => -16,
                        1 => 15,
                        _ => (*q as i8) / 8,
                    };
                    *q = v as u8;
                }
            }
            assert!(fits_five_bits(&data, k / BLOCK * Q8_0_BYTES));
            let want = reference(&x, &data, m, n, k);
            let bytes = Q8Matrix::from_q8_0(&data, n, k, Q8Kernel { isa: Isa::Portable }).unwrap();
            for kernel in kernels() {
                let packed = Q8Matrix::from_q8_0(&data, n, k, kernel).unwrap();
                assert_eq!(packed.five_bit, kernel.isa.five_bit());
                let got = packed.matmul_t(&x, m);
                assert_eq!(bits(&got), bits(&want), "{kernel:?} {m}x{n}x{k}");
                for row in [0, n / 2, n - 1] {
                    assert_eq!(
                        bits(&packed.dequantize_row(row)),
                        bits(&bytes.dequantize_row(row))
                    );
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate_any_kernel() {
        // Inputs at ±127 and weights at ±127 and -128 (a file may hold -128), signs arranged so
        // that the AVX2 kernel's pairs reach 2 · 128 · 127.
        let (m, n, k) = (5, 40, 320);
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let mut data = q8_0(&vec![1.0; n * k], n, k);
        for (i, block) in data.chunks_exact_mut(Q8_0_BYTES).enumerate() {
            for (t, q) in block[2..].iter_mut().enumerate() {
                *q = match (i + t) % 3 {
                    0 => 128, // -128
                    1 => 127,
                    _ => 129, // -127
                };
            }
        }
        let want = reference(&x, &data, m, n, k);
        for kernel in kernels() {
            let got = Q8Matrix::from_q8_0(&data, n, k, kernel)
                .unwrap()
                .matmul_t(&x, m);
            assert_eq!(bits(&got), bits(&want), "{kernel:?}");
        }
    }

    #[test]
    fn a_row_gets_the_same_outputs_alone_and_in_a_batch() {
        let (m, n, k) = (64, 40, 96);
        let x = values(m * k, 4);
        let data = q8_0(&values(n * k, 5), n, k);
        let packed = Q8Matrix::from_q8_0(&data, n, k, Q8Kernel::detect()).unwrap();
        let batch = packed.matmul_t(&x, m);
        for i in [0, 3, 11, 12, 13, 63] {
            let alone = packed.matmul_t(&x[i * k..(i + 1) * k], 1);
            assert_eq!(bits(&alone), bits(&batch[i * n..(i + 1) * n]), "row {i}");
        }
    }

    /// candle's QMatMul on the same quantized tensor: the same values up to its float order
    /// and its activation rounding (ties away from zero, `x / d` rather than `x · 127 / amax`).
    #[test]
    fn products_agree_with_candle() {
        let (m, n, k) = (7, 48, 640);
        let x = values(m * k, 6);
        let w = Tensor::from_vec(values(n * k, 7), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let data = q.data().unwrap().into_owned();
        let got = Q8Matrix::from_q8_0(&data, n, k, Q8Kernel::detect())
            .unwrap()
            .matmul_t(&x, m);
        let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap();
        let want: Vec<f32> = QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= scale * 1e-4,
                "{i}: {g} vs {w} (largest {scale})"
            );
        }
    }

    #[test]
    fn rows_dequantize_as_candle_does() {
        let (n, k) = (21, 96);
        let w = Tensor::from_vec(values(n * k, 8), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let want: Vec<Vec<f32>> = q.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
        let packed = Q8Matrix::from_q8_0(&q.data().unwrap(), n, k, Q8Kernel::detect()).unwrap();
        for (j, row) in want.iter().enumerate() {
            assert_eq!(bits(&packed.dequantize_row(j)), bits(row), "row {j}");
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(Q8Matrix::from_q8_0(&[0; 34], 1, 16, Q8Kernel::detect()).is_err());
        assert!(Q8Matrix::from_q8_0(&[0; 34], 2, 32, Q8Kernel::detect()).is_err());
    }
}
